"""The CIFAR-100 study script: its rows, its table, and a runlocal pass on mock data."""
import json
import os
import pathlib
import subprocess
import sys

from dqnn.data import mock
from experiments import cifar100_study as study

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(name, runs_dir=pathlib.Path('/runs')):
  return study.build_config(study.ROWS_BY_NAME[name], '/data', runs_dir)


def test_rows_are_unique_and_fine_tune_from_the_float_run():
  names = [row.name for row in study.ROWS]
  assert len(names) == len(set(names))
  assert study.ROWS[0].name == 'fp' and not study.ROWS[0].init_from
  float_config = _config('fp')
  assert float_config.num_epochs == study.FLOAT_EPOCHS and float_config.init_from == ''
  for row in study.ROWS[1:]:
    config = _config(row.name)
    assert config.init_from == '/runs/fp'
    assert config.num_train_steps == study.FINE_TUNE_STEPS
    assert config.optimizer.learning_rate == study.FINE_TUNE_LR
    assert config.data_dir == '/data' and not config.download
    assert min(config.quant.w_bits, config.quant.a_bits) < 32


def test_overrides_reach_the_config():
  pooled = _config('w2a2_dq_pooled_acts_s0').quant.act_options
  assert dict(pooled) == {'weighting': 'pooled', 'update': 'gradient'}
  assert _config('w2a2_dq_gradient_acts_s1').quant.act_options['update'] == 'gradient'
  assert dict(_config('w2a2_dq_s0').quant.act_options) == {}  # DQ's defaults.
  assert _config('w2a2_dq_lloyd_s0').optimizer.level_update == 'lloyd'
  assert _config('w2a2_dq_no_residual_s0').optimizer.residual is False
  mixed = _config('w2a2_lqnets_weights_dq_acts_s0').quant
  assert (mixed.weight_quantizer, mixed.act_quantizer) == ('lqnets', 'dq')
  w4 = _config('w4a4_lsq_s0').quant
  assert (w4.w_bits, w4.a_bits, w4.weight_quantizer, w4.act_quantizer) == (4, 4, 'lsq', 'lsq')
  # The defaults row changes nothing but the schedule: the ablations differ from it in one field.
  assert _config('w2a2_dq_s0').optimizer.level_update == 'gradient'


def test_seeds_of_a_cell_differ_only_in_the_seed():
  first, second = _config('w2a2_dq_s0'), _config('w2a2_dq_s1')
  assert (first.seed, second.seed) == (0, 1)
  second.seed = 0
  assert first.to_dict() == second.to_dict()
  assert study.ROWS_BY_NAME['w2a2_dq_s1'].cell == 'w2a2_dq'


def _record(record_dir, name, top1):
  (record_dir / name).mkdir(parents=True)
  (record_dir / name / study.SUMMARY).write_text(json.dumps(
      {'row': name, 'description': f'desc {name}', 'eval_top1': top1, 'steps': 200,
       'wall_s': 120.0}))


def test_table_averages_seeds_and_gives_their_range(tmp_path):
  _record(tmp_path, 'w2a2_dq_s0', 0.40)
  _record(tmp_path, 'w2a2_dq_s1', 0.44)
  _record(tmp_path, 'w2a2_lsq_s0', 0.30)
  table = study.write_table(tmp_path)
  assert (tmp_path / 'results.md').read_text() == table
  assert '| `w2a2_dq` | desc w2a2_dq_s0 | 2 | 42.00; 40.00–44.00 | 200 | 2.0 |' in table
  assert '| `w2a2_lsq` | desc w2a2_lsq_s0 | 1 | 30.00 | 200 | 2.0 |' in table
  assert 'w2a2_lqnets' not in table


def test_runlocal_study_runs_records_and_resumes(tmp_path):
  data_dir = tmp_path / 'data'
  mock.write_mock_dataset('cifar100', str(data_dir), num_examples=64)
  command = [sys.executable, '-m', 'experiments.cifar100_study', '--runlocal',
             f'--data_dir={data_dir}', f'--runs_dir={tmp_path / "runs"}',
             f'--record_dir={tmp_path / "record"}', '--only=fp,w2a2_dq_s0']
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stdout + first.stderr
  assert first.stdout.index('start fp') < first.stdout.index('start w2a2_dq_s0')
  for name in ('fp', 'w2a2_dq_s0'):
    summary = json.loads((tmp_path / 'record' / name / study.SUMMARY).read_text())
    assert summary['steps'] == 4 and 0.0 <= summary['eval_top1'] <= 1.0
    recorded = json.loads((tmp_path / 'record' / name / 'config.json').read_text())
    assert recorded['model'] == '_cifar_resnet_tiny'
  dq = json.loads((tmp_path / 'record' / 'w2a2_dq_s0' / 'config.json').read_text())
  assert dq['init_from'] == str(tmp_path / 'runs' / 'fp')
  table = (tmp_path / 'record' / 'results.md').read_text()
  assert all(f'`{cell}`' in table for cell in ('fp', 'w2a2_dq'))
  again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0
  assert not [line for line in again.stdout.splitlines() if line.startswith('start ')]


def test_unknown_row_is_one_clear_error():
  result = subprocess.run([sys.executable, '-m', 'experiments.cifar100_study', '--only=w9a9'],
                          cwd=ROOT, capture_output=True, text=True)
  assert result.returncode != 0 and "Unknown rows ['w9a9']" in result.stderr
