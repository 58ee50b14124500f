"""Training, evaluation, export and report run with TensorFlow absent (as on accelerator hosts)."""
import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]

# Makes `tensorflow` unfindable, as if it were not installed, and records every attempt.
_HIDE_TENSORFLOW = textwrap.dedent('''
    import sys
    attempts = []
    class _Hide:
      def __init__(self, finder):
        self._finder = finder
      def find_spec(self, name, path=None, target=None):
        if name == 'tensorflow' or name.startswith('tensorflow.'):
          attempts.append(name)
          return None
        return self._finder.find_spec(name, path, target)
      def __getattr__(self, name):
        return getattr(self._finder, name)
    sys.meta_path[:] = [_Hide(f) if hasattr(f, 'find_spec') else f for f in sys.meta_path]
''')


def _run_without_tensorflow(module: str, *args: str) -> str:
  """Runs `python -m module args` with TensorFlow hidden; returns its stdout."""
  script = _HIDE_TENSORFLOW + textwrap.dedent(f'''
      import runpy
      sys.argv = [{module!r}, *{list(args)!r}]
      try:
        runpy.run_module({module!r}, run_name='__main__', alter_sys=True)
      except SystemExit as e:
        assert not e.code, e.code
      assert 'tensorflow' not in sys.modules, 'tensorflow was imported'
      print('DONE; TENSORFLOW PROBES:', sorted(set(attempts)))
  ''')
  r = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True,
                     env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, timeout=600)
  assert r.returncode == 0 and 'DONE;' in r.stdout, r.stderr[-4000:]
  return r.stdout


def test_training_on_a_prepared_dataset_export_and_report_without_tensorflow(tmp_path):
  from dqnn.data import mock  # pylint: disable=g-import-not-at-top
  workdir, exported, tfds_dir = tmp_path / 'run', tmp_path / 'model.dqnn', tmp_path / 'tfds'
  mock.write_mock_dataset('cifar100', str(tfds_dir), num_examples=64)
  _run_without_tensorflow('dqnn.main', '--config=configs/cifar100_resnet20_w2a2.py:runlocal',
                          f'--workdir={workdir}', '--config.dataset=cifar100',
                          f'--config.data_dir={tfds_dir}')
  assert (workdir / 'metrics.jsonl').exists()
  assert any(p.name.startswith('events.out.tfevents') for p in workdir.iterdir())
  _run_without_tensorflow('dqnn.export', f'--workdir={workdir}', f'--out={exported}')
  assert exported.stat().st_size > 0
  assert 'BOPs' in _run_without_tensorflow('dqnn.report', f'--workdir={workdir}')
