"""The benchmarks run as their docstrings say (from the repository root, as plain scripts) on a
tiny model: a change to the train step cannot leave them broken until someone has an accelerator.
"""
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(*args: str) -> str:
  result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_step_cost_reports_dq_and_a_teachers_bytes_and_flops_against_float():
  report = json.loads(_run('benchmarks/step_cost.py', '--model=_cifar_resnet_tiny', '--batch=8',
                           '--variants=float,dq', '--teachers=_cifar_resnet_tiny', '--time',
                           '--rounds=1', '--steps=1', '--warmup=0', '--json'))
  float_step, dq_step, distilled = report['steps']
  assert (float_step['variant'], dq_step['variant']) == ('float', 'DQ W2A2')
  assert float_step['bytes_vs_float'] == 1.0 and dq_step['bytes'] > 0 and dq_step['flops'] > 0
  assert dq_step['bytes_vs_float'] == pytest.approx(dq_step['bytes'] / float_step['bytes'])
  assert distilled['variant'] == 'DQ W2A2 + _cifar_resnet_tiny teacher'
  assert distilled['extra_flops'] > 0 and distilled['extra_bytes'] > 0
  assert distilled['flops_vs_student'] == pytest.approx(distilled['flops'] / dq_step['flops'])
  assert distilled['time_vs_student'] > 0


def test_train_throughput_quick_times_both_policies():
  rows = json.loads(_run('benchmarks/train_throughput.py', '--models=_cifar_resnet_tiny',
                         '--cifar_batch=8', '--steps=1', '--warmup=0', '--json'))
  assert {row['policy'] for row in rows} == {'FP', 'DQ W2A2'}
  assert all(row['img_per_s'] > 0 for row in rows), rows


def test_input_pipeline_ends_with_the_end_to_end_rates_as_json(tmp_path):
  from PIL import Image
  import numpy as np
  rng = np.random.default_rng(0)
  for i, wnid in enumerate(['n01440764', 'n01443537'] * 4):  # 8 JPEGs, two classes.
    image = rng.integers(0, 256, (60 + 4 * i, 80, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / f'{wnid}_{i}.JPEG', quality=90)
  lines = _run('benchmarks/input_pipeline.py', f'--imagenet_folder={tmp_path}', '--batch=2',
               '--batches=2', '--workers=0', '--rounds=2', '--skip_cifar').strip().splitlines()
  rates = json.loads(lines[-1])
  assert set(rates) == {'original', 'resized', 'previous_original', 'previous_resized'}
  assert all(rate > 0 for rate in rates.values()), rates
  assert any(line.startswith('| record read |') for line in lines)
