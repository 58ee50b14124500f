import json
import os
import pathlib
import subprocess
import sys


def test_four_device_step_equals_one_device_step():
  # Weight updates, DQ activation levels (gradient and closed form) and BatchNorm statistics
  # all use global batch statistics, so sharding the batch over 4 devices changes nothing.
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
         'JAX_PLATFORMS': 'cpu'}
  script = pathlib.Path(__file__).with_name('sharded_step.py')
  result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['all_moved'], 'the step left some parameter or statistic unchanged'
  assert report['max_diff_in_tolerances'] <= 1.0, report['diffs']
