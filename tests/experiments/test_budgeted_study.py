"""The budgeted study: its rows per scale, its table and verdicts, and a runlocal pass."""
import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from experiments import budgeted_study as study

ROOT = pathlib.Path(__file__).resolve().parents[2]
CPU, GPU = study.SCALES['cpu'], study.SCALES['gpu']


def _rows(scale):
  return {row.name: row for row in study.rows(scale)}


def _config(scale, name, runs_dir=pathlib.Path('/runs')):
  return study.build_config(_rows(scale)[name], scale, '/data', runs_dir)


@pytest.mark.parametrize('scale', [CPU, GPU], ids=['cpu', 'gpu'])
def test_every_scale_has_float_methods_by_mode_and_seed(scale):
  rows = study.rows(scale)
  names = [row.name for row in rows]
  assert len(names) == len(set(names))
  # Float, fine-tunes, from scratch, 5 recipes, 9 claims, 4 MobileNetV2 (float + 3), 9 without
  # BatchNorm (float + 8), 11 distill (ResNet-56 float + 3 methods x 2 teachers + mixed + W2A1
  # + W3A3 with and without a teacher), 3 mixed precision (DQ and LSQ, DQ by the proxy).
  per_seed = 1 + 3 * len(scale.fine_tune_epochs) + 3 + 5 + 9 + 4 + 9 + 11 + 3
  assert len(rows) == per_seed * len(scale.seeds) and len(scale.seeds) >= 2
  # Float runs start first: every fine-tune waits for one.
  assert [row.name for row in rows[:len(scale.seeds)]] == [f'fp_s{s}' for s in scale.seeds]
  for seed in scale.seeds:
    for method in ('dq', 'lqnets', 'lsq'):
      assert f'w2a2_{method}_scratch{scale.scratch_epochs}_s{seed}' in names
      for epochs in scale.fine_tune_epochs:
        assert f'w2a2_{method}_ft{epochs}_s{seed}' in names
  for row in rows:
    config = _config(scale, row.name)
    assert config.global_batch_size == scale.batch_size and config.seed == row.seed
    assert config.data_dir == '/data' and not config.download and config.input_on_device
    if row.cell.startswith('fp'):
      assert config.num_epochs == scale.float_epochs and config.quant.w_bits == 32
    elif row.init_from:  # A fine-tune, from the float run of its own seed and model.
      float_cell = ('fp_mobilenetv2' if 'mobilenetv2' in row.cell else
                    'fp_no_bn' if 'no_bn' in row.cell else 'fp')
      assert config.init_from == f'/runs/{float_cell}_s{row.seed}'
      assert config.model == _config(scale, f'{float_cell}_s{row.seed}').model
      # The recipe with as many quantized epochs as from scratch is the one exception.
      assert config.num_epochs in (*scale.fine_tune_epochs, scale.scratch_epochs)
      as_long = row.cell == f'w2a2_dq_ft{scale.scratch_epochs}'
      assert (config.num_epochs == scale.scratch_epochs) == as_long
      assert min(config.quant.w_bits, config.quant.a_bits) < 32
    else:
      assert config.num_epochs == scale.scratch_epochs and config.init_from == ''
      assert config.optimizer.learning_rate == 0.1


def test_fine_tune_as_long_as_from_scratch_is_one_row_when_the_scale_already_has_it():
  scale = dataclasses.replace(CPU, fine_tune_epochs=(1, CPU.scratch_epochs))
  names = [row.name for row in study.rows(scale)]
  assert len(names) == len(set(names))
  assert [row.group for row in study.rows(scale) if row.name == 'w2a2_dq_ft4_s0'] == ['fine_tune']
  assert ('w2a2_dq_scratch4', 'w2a2_dq_ft4') in {
      (c.first, c.second) for c in study.comparisons(scale)}


def test_gpu_scale_is_the_issue_scale():
  assert GPU.train_per_class * study.NUM_CLASSES == 28_000 and GPU.batch_size == 256
  assert (GPU.float_epochs, GPU.fine_tune_epochs, GPU.scratch_epochs) == (40, (15, 30), 70)
  # The configs scale the learning rate with the batch: 0.1 x 256/128 from scratch.
  config = _config(GPU, 'w2a2_lsq_ft15_s1')
  assert config.optimizer.learning_rate == study.FINE_TUNE_LR
  assert config.optimizer.learning_rate_batch_size == 128
  assert (config.quant.weight_quantizer, config.quant.act_quantizer) == ('lsq', 'lsq')


def test_rows_differ_from_their_baseline_in_the_named_setting_only():
  baseline = _config(CPU, 'w2a2_dq_ft1_s0').to_dict()

  def changes(name):
    config = _config(CPU, name).to_dict()
    return {key for key in config if config[key] != baseline[key]}

  assert changes('w2a2_dq_ft1_s1') == {'seed', 'init_from'}
  assert changes('w2a2_dq_ft1_no_wd_s0') == {'optimizer'}
  assert _config(CPU, 'w2a2_dq_ft1_no_wd_s0').optimizer.weight_decay == 0.0
  warm = _config(CPU, 'w2a2_dq_ft1_lr0.1_warmup_s0')
  assert (warm.optimizer.learning_rate, warm.schedule.warmup_epochs) == (0.1, 0.1)
  assert changes('w2a2_dq_ft1_bn_reest_s0') == {'bn_reestimation_batches'}
  assert changes('w2a2_dq_pooled_ft1_s0') == {'quant'}
  assert changes('w2a2_latent_levels_ft1_s0') == {'quant'}
  assert _config(CPU, 'w2a2_latent_levels_ft1_s0').quant.weight_quantizer == 'latent_levels'
  assert dict(_config(CPU, 'w2a2_dq_pooled_ft1_s0').quant.act_options) == {
      'weighting': 'pooled'}
  one_bit = _config(CPU, 'w2a1_dq_pooled_ft1_s1').quant
  assert (one_bit.w_bits, one_bit.a_bits, one_bit.act_options['weighting']) == (2, 1, 'pooled')
  assert dict(_config(CPU, 'w2a2_dq_ft1_s0').quant.act_options) == {}  # DQ's defaults.
  assert changes('w2a2_latent_weights_dq_acts_ft1_s0') == {'quant'}
  latent = _config(CPU, 'w2a2_latent_weights_dq_acts_ft1_s0').quant
  assert (latent.weight_quantizer, latent.act_quantizer) == ('lqnets', 'dq')
  # Without BatchNorm: the model, and for the fine-tunes the float run they start from.
  assert changes('w2a2_no_bn_dq_ft1_s0') == {'model', 'init_from'}
  assert _config(CPU, 'w2a2_no_bn_dq_ft1_s0').model == 'cifar_resnet20_no_bn'
  assert changes('w2a1_no_bn_dq_pooled_ft1_s0') == {'model', 'init_from', 'quant'}
  no_bn_pooled = _config(CPU, 'w2a1_no_bn_dq_pooled_ft1_s0').quant
  assert (no_bn_pooled.a_bits, no_bn_pooled.act_options['weighting']) == (1, 'pooled')
  assert changes('w2a2_no_bn_dq_eps1_ft1_s0') == {'model', 'init_from', 'quant'}
  assert dict(_config(CPU, 'w2a2_no_bn_dq_eps1_ft1_s0').quant.act_options) == {'eps': 1.0}
  assert changes('w2a1_dq_rms_ft1_s1') == {'seed', 'init_from', 'quant'}
  assert dict(_config(CPU, 'w2a1_no_bn_dq_rms_ft1_s0').quant.act_options) == {'weighting': 'rms'}
  float_no_bn = _config(CPU, 'fp_no_bn_s0')
  assert float_no_bn.model == 'cifar_resnet20_no_bn' and float_no_bn.quant.a_bits == 32


@pytest.mark.parametrize('scale', [CPU, GPU], ids=['cpu', 'gpu'])
def test_distill_rows_pair_each_method_with_and_without_a_teacher_of_the_same_seed(scale):
  rows = _rows(scale)
  epochs = scale.fine_tune_epochs[0]
  runs = pathlib.Path('/runs')
  for seed in scale.seeds:
    large = _config(scale, f'fp_resnet56_s{seed}')
    assert large.model == 'cifar_resnet56' and large.quant.w_bits == 32
    for method in ('dq', 'lqnets', 'lsq'):
      without = _config(scale, f'w2a2_{method}_ft{epochs}_s{seed}')
      assert not without.distill.teacher_workdir
      for suffix, teacher in (('kd', f'fp_s{seed}'), ('kd56', f'fp_resnet56_s{seed}')):
        name = f'w2a2_{method}_ft{epochs}_{suffix}_s{seed}'
        config = _config(scale, name)
        assert rows[name].needs == (f'fp_s{seed}', teacher)
        assert config.distill.teacher_workdir == str(runs / teacher)
        assert (config.distill.weight, config.distill.temperature) == (1.0, 1.0)
        # The teacher is the one difference from the row without one.
        config.distill = without.distill
        assert config.to_dict() == without.to_dict()
    for bits, (w, a) in (('w2a1', (2, 1)), ('w3a3', (3, 3))):
      taught = _config(scale, f'{bits}_dq_ft{epochs}_kd_s{seed}')
      assert (taught.quant.w_bits, taught.quant.a_bits) == (w, a)
      assert taught.distill.teacher_workdir == str(runs / f'fp_s{seed}')
    assert _config(scale, f'w2a2_dq_ft{epochs}_kd_mixed_s{seed}').distill.weight == 0.5
  chosen = _selection(groups='distill')
  assert chosen[:2] == ['fp_s0', 'fp_s1'] and chosen.index('fp_resnet56_s1') < chosen.index(
      f'w2a2_dq_ft{CPU.fine_tune_epochs[0]}_kd56_s1')


def test_every_comparison_names_two_cells_of_the_scale():
  for scale in (CPU, GPU):
    cells = {row.cell for row in study.rows(scale)}
    for comparison in study.comparisons(scale):
      assert {comparison.first, comparison.second} <= cells, comparison


def test_verdict_needs_separate_ranges_and_two_seeds():
  assert 'first higher' in study.verdict([30.0, 31.0], [28.0, 29.5])
  assert 'second higher' in study.verdict([28.0, 29.5], [30.0, 31.0])
  assert study.verdict([30.0, 31.0], [29.0, 30.5]).startswith('tie')
  assert study.verdict([30.0, 31.0], [29.0, 30.0]).startswith('tie')  # Touching ranges.
  assert 'fewer than 2 seeds' in study.verdict([30.0], [20.0, 21.0])


def _record(record_dir, name, top1, wall_s=120.0, **extra):
  cell, seed = name.rsplit('_s', 1)
  (record_dir / name).mkdir(parents=True)
  (record_dir / name / study.SUMMARY).write_text(json.dumps(
      {'row': name, 'cell': cell, 'description': f'desc {cell}', 'eval_top1': top1,
       'seed': int(seed), 'steps': 156, 'wall_s': wall_s, **extra}))


def test_table_gives_mean_range_and_marks_differences_outside_the_ranges(tmp_path):
  _record(tmp_path, 'w2a2_dq_ft1_s0', 0.30)
  _record(tmp_path, 'w2a2_dq_ft1_s1', 0.32, wall_s=240.0)
  _record(tmp_path, 'w2a2_lqnets_ft1_s0', 0.25)
  _record(tmp_path, 'w2a2_lqnets_ft1_s1', 0.27)
  _record(tmp_path, 'w2a2_lsq_ft1_s0', 0.31)
  _record(tmp_path, 'w2a2_lsq_ft1_s1', 0.335)
  _record(tmp_path, 'w2a2_dq_scratch4_s0', 0.40)
  table = study.write_table(CPU, tmp_path)
  assert (tmp_path / 'results.md').read_text() == table
  assert '5,000 training images (50 per class)' in table
  assert '| `w2a2_dq_ft1` | desc w2a2_dq_ft1 | 2 | 31.00 | 30.00–32.00 | 156 | 3.0 |' in table
  assert '| `w2a2_dq_scratch4` | desc w2a2_dq_scratch4 | 1 | 40.00 | — | 156 | 2.0 |' in table
  assert ('| DQ vs LQ-Nets (ft1) | `w2a2_dq_ft1` | `w2a2_lqnets_ft1` | +5.00 | +5.00, +5.00 | '
          '**first higher, outside both seed ranges** |') in table
  assert ('| DQ vs LSQ (ft1) | `w2a2_dq_ft1` | `w2a2_lsq_ft1` | -1.25 | -1.00, -1.50 | '
          'tie (seed ranges overlap) |') in table
  assert ('| DQ: from scratch vs fine-tuned | `w2a2_dq_scratch4` | `w2a2_dq_ft1` | +9.00 | '
          '+10.00 | fewer than 2 seeds: no range to judge |') in table
  assert 'recipe' not in table  # No recipe row recorded, so no recipe comparison.
  assert 'BatchNorm re-estimation' not in table
  _record(tmp_path, 'w2a2_dq_ft1_bn_reest_s0', 0.33, eval_top1_before_bn_reestimation=0.30)
  table = study.write_table(CPU, tmp_path)
  assert '| `w2a2_dq_ft1_bn_reest_s0` | 30.00 | 33.00 | +3.00 |' in table
  # A seed recorded by a call with more seeds (--seeds=0,1,2) stays in the table.
  _record(tmp_path, 'w2a2_dq_ft1_s2', 0.34)
  table = study.write_table(CPU, tmp_path)
  assert '| `w2a2_dq_ft1` | desc w2a2_dq_ft1 | 3 | 32.00 | 30.00–34.00 | 156 |' in table
  assert 'seeds 0, 1, 2' in table


def test_a_record_dir_holds_one_scale(tmp_path):
  study._check_record_dir(CPU, tmp_path)
  study._check_record_dir(CPU, tmp_path)  # The same scale again: fine.
  with pytest.raises(SystemExit, match='another scale'):
    study._check_record_dir(GPU, tmp_path)


def test_a_run_without_its_final_eval_is_not_finished(tmp_path):
  assert study._finished(tmp_path) is None
  lines = [{'step': 50, 'split': 'train', 'loss': 3.0}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
  assert study._finished(tmp_path) is None  # Stopped by SIGTERM before its last step.
  lines.append({'step': 78, 'split': 'eval', 'loss': 2.5, 'top1': 0.2})
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
  assert study._finished(tmp_path)['top1'] == 0.2


def _study(tmp_path, *flags):
  command = [sys.executable, '-m', 'experiments.budgeted_study', '--runlocal', '--scale=cpu',
             f'--runs_dir={tmp_path / "runs"}', f'--record_dir={tmp_path / "record"}', *flags]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_runlocal_study_runs_records_and_resumes(tmp_path):
  """A fine-tune, a from-scratch row, a distilled row and a mixed-precision row, then a resume."""
  rows = ('fp_s0', 'w2a2_dq_ft1_s0', 'w2a2_lsq_scratch4_s0', 'w2a2_dq_ft1_kd_s0',
          'w2a2_mixed_dq_proxy_ft1_s0')
  only = '--only=' + ','.join(rows)
  first = _study(tmp_path, only)
  assert first.returncode == 0, first.stdout + first.stderr
  for after in rows[1:]:
    if after != 'w2a2_lsq_scratch4_s0':
      assert first.stdout.index('start fp_s0') < first.stdout.index(f'start {after}')
  record = tmp_path / 'record'
  for name in rows:
    summary = json.loads((record / name / study.SUMMARY).read_text())
    assert summary['steps'] == 4 and 0.0 <= summary['eval_top1'] <= 1.0
    recorded = json.loads((record / name / 'config.json').read_text())
    assert recorded['model'] == '_cifar_resnet_tiny'
    assert recorded['dataset'] == 'cifar100_sample'
  fine_tune = json.loads((record / 'w2a2_dq_ft1_s0' / 'config.json').read_text())
  assert fine_tune['init_from'] == str(tmp_path / 'runs' / 'fp_s0')
  taught = json.loads((record / 'w2a2_dq_ft1_kd_s0' / 'config.json').read_text())
  assert taught['distill']['teacher_workdir'] == str(tmp_path / 'runs' / 'fp_s0')
  assert 'distill_loss' in (record / 'w2a2_dq_ft1_kd_s0' / 'metrics.jsonl').read_text()
  mixed_record = record / 'w2a2_mixed_dq_proxy_ft1_s0'
  mixed = json.loads((mixed_record / study.SUMMARY).read_text())['mixed_precision']
  assert mixed['sensitivity'] == 'proxy' and mixed['bops'] <= mixed['budget_bops']
  overrides = json.loads((mixed_record / 'config.json').read_text())['quant']['overrides']
  assert {layer: [o['w_bits'], o['a_bits']] for layer, o in overrides.items()} == mixed['bits']
  table = (record / 'results.md').read_text()
  assert all(f'`{cell}`' in table for cell in ('fp', 'w2a2_dq_ft1', 'w2a2_lsq_scratch4'))
  assert '| `w2a2_mixed_dq_proxy_ft1_s0` | proxy |' in table
  again = _study(tmp_path, only)
  assert again.returncode == 0, again.stdout + again.stderr
  assert not [line for line in again.stdout.splitlines() if line.startswith('start ')]
  # The float run's workdir is gone (a cleaned runs_dir): a new fine-tune trains it again,
  # checked against its record, before starting from it.
  recorded_float = (record / 'fp_s0' / study.SUMMARY).read_text()
  shutil.rmtree(tmp_path / 'runs' / 'fp_s0')
  later = _study(tmp_path, '--only=w2a2_lsq_ft1_s0')
  assert later.returncode == 0, later.stdout + later.stderr
  assert 'fp_s0 trained again: the same top-1 as its record' in (
      tmp_path / 'runs' / 'fp_s0.log').read_text()
  assert later.stdout.index('done fp_s0') < later.stdout.index('start w2a2_lsq_ft1_s0')
  assert (record / 'fp_s0' / study.SUMMARY).read_text() == recorded_float


def test_bad_selection_is_one_clear_error(tmp_path):
  unknown = _study(tmp_path, '--only=w9a9_dq_ft1_s0')
  assert unknown.returncode != 0 and "Unknown rows or cells ['w9a9_dq_ft1_s0']" in unknown.stderr
  group = _study(tmp_path, '--groups=scratch,extras')
  assert group.returncode != 0 and "Unknown groups ['extras']" in group.stderr


def _selection(**flags):
  args = argparse.Namespace(**{'only': '', 'groups': ','.join(study.GROUPS), **flags})
  return [row.name for row in study._select(CPU, args)]


def test_selection_runs_groups_in_order_after_the_float_runs_they_need():
  assert _selection(only='w2a2_dq_ft1_s1') == ['fp_s1', 'w2a2_dq_ft1_s1']
  assert _selection(only='w2a2_lsq_scratch4') == ['w2a2_lsq_scratch4_s0', 'w2a2_lsq_scratch4_s1']
  chosen = _selection(groups='claims,fine_tune')
  assert chosen[:2] == ['fp_s0', 'fp_s1']
  groups = [_rows(CPU)[name].group for name in chosen[2:]]
  assert groups == ['claims'] * 18 + ['fine_tune'] * 6
  depthwise = _selection(groups='depthwise')
  assert depthwise[0] == 'fp_mobilenetv2_s0' and 'fp_s0' not in depthwise
  no_bn = _selection(groups='no_bn')
  assert no_bn[0] == 'fp_no_bn_s0' and len(no_bn) == 18 and 'fp_s0' not in no_bn
  everything = _selection()
  assert sorted(everything) == sorted(_rows(CPU)) and everything[:2] == ['fp_s0', 'fp_s1']
