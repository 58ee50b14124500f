"""Every experiment config loads (full and runlocal), is plain data and builds its model."""
import functools
import importlib.util
import pathlib
import re

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from dqnn import models
from dqnn import run_config
from dqnn import runs
from dqnn.data import datasets

REPO = pathlib.Path(__file__).resolve().parents[2]

CONFIG_FILES = sorted(path for path in (REPO / 'configs').glob('*.py')
                      if path.name not in ('__init__.py', 'base.py'))


def _file_stem(model: str) -> str:
  """A model's name in config file names: 'cifar_mobilenet_v2' -> 'mobilenetv2'."""
  return model.removeprefix('cifar_').replace('_', '')


EXPECTED_EXPERIMENTS = (
    [f'cifar100_{_file_stem(m)}_{b}' for m in models.CIFAR_MODELS
     for b in ('fp', 'w2a2', 'w3a3', 'w4a4')]
    + [f'imagenet_{_file_stem(m)}_{b}' for m in models.IMAGENET_MODELS for b in ('fp', 'w2a2')]
    + ['imagenet_resnet18_w3a3', 'imagenet_resnet18_w4a4', 'fake_data_throughput'])


def _load(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(f'config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _leaves(config: ml_collections.ConfigDict):
  for value in config.values():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value)
    else:
      yield value


def _sizes(config):
  if config.dataset == 'fake':
    return config.num_classes, config.image_size
  spec = datasets.spec(config.dataset)
  return spec.num_classes, config.image_size or spec.image_size


def test_every_expected_experiment_has_a_config():
  assert not set(EXPECTED_EXPERIMENTS) - {path.stem for path in CONFIG_FILES}


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.stem)
def test_docstring_gives_command_expectation_runtime_and_recipe(path):
  doc = _load(path).__doc__
  assert f'python -m dqnn.main --config=configs/{path.name}' in doc
  for field in ('Expected', 'Runtime:', 'Recipe:'):
    assert field in doc, field
  assert re.search(r'anchor from the literature|not measured yet', doc)


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.stem)
def test_config_loads_and_builds_its_model(path):
  module = _load(path)
  config, local = module.get_config(), module.get_config('runlocal')
  for cfg in (config, local):
    assert isinstance(cfg, ml_collections.ConfigDict)
    for value in _leaves(cfg):
      assert isinstance(value, (str, int, float, bool, tuple, list, type(None))), value
    models.check_input_size(cfg.model, _sizes(cfg)[1])
  assert local.global_batch_size <= 8 and 0 < local.num_train_steps <= 10
  assert local.quant == config.quant
  # runlocal trains CIFAR configs on the embedded sample, so that it needs no download.
  assert local.dataset == ('cifar100_sample' if config.dataset == 'cifar100' else config.dataset)
  # runlocal's model is the full model or a tiny variant of its family: build both.
  for cfg in (config, local) if local.model != config.model else (config,):
    num_classes, image_size = _sizes(cfg)
    model = runs.model_from_config(cfg, classes=num_classes)
    logits, variables = jax.eval_shape(
        functools.partial(model.init_with_output, train=False), jax.random.key(0),
        jnp.zeros((2, image_size, image_size, 3), jnp.float32))
    assert logits.shape == (2, num_classes)
    quantized = min(cfg.quant.w_bits, cfg.quant.a_bits) < 32
    has_quantizer = any('weight_quantizer' in jax.tree_util.keystr(path)
                        for path, _ in jax.tree_util.tree_leaves_with_path(variables['params']))
    assert has_quantizer == quantized


@pytest.mark.parametrize('name', ['cifar10_resnet20_fp', 'cifar10_resnet20_w2a2'])
def test_cifar10_configs_keep_cifar10_in_runlocal(name):
  # CIFAR-10 has no embedded sample: a smoke run must not train on CIFAR-100 data instead.
  module = _load(REPO / 'configs' / f'{name}.py')
  for config in (module.get_config(), module.get_config('runlocal')):
    assert config.dataset == 'cifar10'
    assert _sizes(config)[0] == 10


@pytest.mark.parametrize('name', ['imagenet_resnet18_w2a2', 'imagenet_mobilenetv2_w2a2'])
def test_imagenet_fine_tune_recipes_need_a_float_run_or_an_explicit_none(name):
  config = _load(REPO / 'configs' / f'{name}.py').get_config()
  with pytest.raises(run_config.ConfigError,
                     match='init_from: this recipe fine-tunes a float run .*init_from=none'):
    run_config.validate(config)
  config.init_from = run_config.INIT_FROM_NONE
  run_config.validate(config)
  assert run_config.init_from_workdir(config) == ''
  config.init_from = '/runs/float'
  assert run_config.init_from_workdir(config) == '/runs/float'
  # A smoke run trains a tiny model, which no full-size float run can initialise.
  run_config.validate(_load(REPO / 'configs' / f'{name}.py').get_config('runlocal'))
  float_config = _load(REPO / 'configs' / f'{name.replace("w2a2", "fp")}.py').get_config()
  assert float_config.init_from == ''
