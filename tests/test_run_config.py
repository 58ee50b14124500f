"""Config checks: unusable values listed at once, changed fields named, old configs kept."""
import json
import os

import pytest

from configs import base
from dqnn import run_config
from dqnn.models import MODELS
from train_testlib import tiny_config


def test_every_unusable_field_is_listed_in_one_error():
  config = tiny_config(global_batch_size=0, eval_batch_size=-8, dtype='int8',
                       num_train_steps=-1, num_epochs=0, model='resnet81')
  config.dataset = 'cifar1000'
  with pytest.raises(run_config.ConfigError) as error:
    run_config.validate(config)
  lines = sorted(str(error.value).splitlines()[1:])
  assert lines[:5] == [
      "  dataset='cifar1000': must be one of 'cifar10', 'cifar100', 'cifar100_sample', "
      "'imagenet2012', 'fake'. Did you mean 'cifar100'?",
      "  dtype='int8': must be one of 'float32', 'bfloat16', 'float16'.",
      '  eval_batch_size=-8: must be a positive integer.',
      '  global_batch_size=0: must be a positive integer.',
      "  model='resnet81': must be one of " + ', '.join(
          repr(name) for name in MODELS if not name.startswith('_')) + ". Did you mean "
      "'resnet18'?"]
  assert lines[5:] == ['  num_epochs=0: must be > 0 when num_train_steps=-1; nothing to train.']
  run_config.validate(tiny_config())


def test_a_field_the_schema_does_not_know_is_refused_with_the_nearest_name():
  config = tiny_config()
  config.lable_smoothing = 0.1
  config.optimizer.momentun = 0.8
  with pytest.raises(run_config.ConfigError) as error:
    run_config.validate(config)
  assert sorted(str(error.value).splitlines()[1:]) == [
      "  lable_smoothing: not a dqnn config field. Did you mean 'label_smoothing'?",
      "  optimizer.momentun: not a dqnn config field. Did you mean 'optimizer.momentum'?"]


def test_the_schema_lists_exactly_the_fields_of_the_base_config():
  fields = set(run_config._flat(base.get_base_config().to_dict(),  # pylint: disable=protected-access
                                groups=frozenset({'optimizer', 'schedule', 'distill'})))
  assert fields == set(run_config.SCHEMA)
  for name in run_config.RESUMABLE_FIELDS:  # What may change on resume is stated in base.py too.
    assert run_config.SCHEMA[name].resumable


def test_synthetic_data_needs_its_sizes():
  config = tiny_config(num_classes=0, image_size=32)
  config.dataset = 'fake'
  with pytest.raises(run_config.ConfigError, match="dataset='fake': set num_train_steps"):
    run_config.validate(config)
  config.num_classes = 10
  run_config.validate(config)


def test_state_differences_name_the_fields_that_shape_the_saved_state():
  saved = run_config.as_json(tiny_config())
  config = tiny_config(seed=3, num_train_steps=99)
  config.quant.w_bits = 3
  config.optimizer.momentum = 0.5
  assert run_config.state_differences(saved, config) == [
      'optimizer.momentum: checkpoint 0.9, this run 0.5',
      'quant.w_bits: checkpoint 2, this run 3']


def test_values_that_lose_checkpoints_or_train_wrongly_are_refused():
  config = tiny_config(num_train_steps=0, keep_checkpoints=0, eval_every_steps=-1,
                       label_smoothing=5.0)
  config.optimizer.learning_rate = -0.1
  with pytest.raises(run_config.ConfigError) as error:
    run_config.validate(config)
  assert [line.split('=')[0].strip() for line in str(error.value).splitlines()[1:]] == [
      'num_train_steps', 'optimizer.learning_rate', 'label_smoothing', 'eval_every_steps',
      'keep_checkpoints']


def test_quantizers_and_their_options_are_checked_before_any_model_is_built():
  config = tiny_config()
  config.quant.act_options = {'momentum': 0.9, 'bogus': 1}
  config.quant.overrides = {'stage1/*': {'weight_quantizer': 'nope'},
                            'head': {'weight_options': {'per_channel': 'yes'}}}
  with pytest.raises(run_config.ConfigError) as error:
    run_config.validate(config)
  lines = str(error.value).splitlines()[1:]
  assert len(lines) == 3
  assert lines[0].startswith("  quant: Unknown options ['bogus'] for activation quantizer 'dq'")
  assert lines[1].startswith("  quant.overrides['head']: Option 'per_channel' of weight "
                             "quantizer 'dq' must be bool")
  assert lines[2].startswith("  quant.overrides['stage1/*']: Unknown weight quantizer 'nope'")
  config = tiny_config()
  config.quant.a_bits = 5
  with pytest.raises(run_config.ConfigError, match='quant: a_bits must be one of'):
    run_config.validate(config)


def test_changed_fields_skip_the_resumable_ones():
  saved = run_config.as_json(tiny_config())
  config = tiny_config(num_train_steps=40, log_every_steps=7, data_dir='/elsewhere', seed=3)
  config.quant.act_quantizer = 'lsq'
  config.schedule.decay_epochs = (1, 2)
  assert run_config.changed_fields(saved, config) == [
      "quant.act_quantizer: was 'dq', now 'lsq'",
      'schedule.decay_epochs: was [], now [1, 2]',
      'seed: was 0, now 3']
  assert run_config.changed_fields(saved, tiny_config()) == []


def test_a_run_saved_before_a_field_existed_resumes_with_the_value_its_absence_means():
  saved = run_config.as_json(tiny_config())
  del saved['distill']  # A config.json written before distillation existed.
  assert run_config.changed_fields(saved, tiny_config()) == []
  taught = tiny_config()
  taught.distill.teacher_workdir = '/runs/teacher'
  assert run_config.changed_fields(saved, taught) == [
      "distill.teacher_workdir: was '(absent)', now '/runs/teacher'"]


def test_write_keeps_a_differing_previous_config(tmp_path):
  workdir = str(tmp_path)
  run_config.write(tiny_config(), workdir, step=0)
  run_config.write(tiny_config(), workdir, step=2)
  assert os.listdir(workdir) == ['config.json']
  run_config.write(tiny_config(seed=1), workdir, step=2)
  run_config.write(tiny_config(seed=2), workdir, step=2)
  kept = {name: json.loads((tmp_path / name).read_text())['seed'] for name in os.listdir(workdir)}
  assert kept == {'config.json': 2, 'config.2.json': 0, 'config.2.1.json': 1}


def test_damaged_config_json_is_a_clear_error(tmp_path):
  (tmp_path / run_config.CONFIG_FILE).write_text('{"model": ')
  with pytest.raises(run_config.ConfigError, match='config.json is damaged'):
    run_config.read(str(tmp_path))
