"""A DQ-like weight quantizer from outside dqnn (a level table and an index, moved by its own
non-gradient update rule), plugged in through `register_weight_quantizer` and its
`WeightCapabilities` alone: it trains, resumes, warm-starts from a float run, is validated and
repaired, and exports. And DQ itself is such a plug-in: no dqnn module outside
`dqnn/quantizers/` imports it."""
import ast
import pathlib
from typing import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn import export
from dqnn import optim
from dqnn import quantizers
from dqnn import runs
from dqnn import train
from dqnn import warm_start
from train_testlib import read_metrics, tiny_config

LEVELS, INDEX = 'toy_levels', 'toy_index'


def _weight(params):
  """The kernel: one shared level table `(L,)` read at the integer index."""
  levels = params[LEVELS]
  chosen = jnp.clip(jnp.round(params[INDEX]), 0, levels.shape[-1] - 1).astype(jnp.int32)
  return jnp.take(levels, chosen)


def _nearest(values, levels):
  return jnp.argmin(jnp.abs(values[..., None] - levels), axis=-1).astype(jnp.float32)


def _fitted(kernel, num_levels):
  levels = jnp.quantile(kernel, jnp.linspace(0.1, 0.9, num_levels))
  return {LEVELS: levels, INDEX: _nearest(kernel, levels)}


def _update(steps, params, *, residual, level_update):
  """Levels take their step (kept sorted); each weight moves by its step in weight units, then
  snaps to the nearest level: the index stays an integer, which gradient descent would not."""
  del residual, level_update  # The wrapper's DQ options; this rule has none.
  levels = jnp.sort(params[LEVELS] + steps[LEVELS])
  new_index = _nearest(_weight(params) + steps[INDEX], levels)
  return {INDEX: new_index - params[INDEX], LEVELS: levels - params[LEVELS]}


def _project(params):
  levels = jnp.sort(params[LEVELS])
  return {LEVELS: levels, INDEX: _nearest(_weight(params), levels)}


def _validate(params, where):
  levels, index = params[LEVELS], params[INDEX]
  if not bool(jnp.all(jnp.diff(levels) > 0)):
    raise ValueError(f'Toy levels at {where} are not increasing.')
  if not bool(jnp.all((index == jnp.round(index)) & (index >= 0)
                      & (index <= levels.shape[-1] - 1))):
    raise ValueError(f'Toy index at {where} is not a level number.')


def _fit(params, kernel):
  return _fitted(jnp.asarray(kernel, jnp.float32), params[LEVELS].shape[-1])


class ToyLevelsWeight(nn.Module):
  """`shape` kernel as `levels[index]`, a table of `2**bits` levels shared by all weights."""
  bits: int
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, shape):
    initial = {}

    def init(rng, name):
      if not initial:
        initial.update(_fitted(self.kernel_init(rng, shape, jnp.float32), 2 ** self.bits))
      return initial[name]

    params = {name: self.param(name, init, name) for name in (LEVELS, INDEX)}
    # Exact gradient for the levels, straight-through (in weight units) for the index.
    return _weight(params) + params[INDEX] - jax.lax.stop_gradient(params[INDEX])


quantizers.register_weight_quantizer(
    'toy_levels', ToyLevelsWeight, param_groups=[{INDEX: 'weights', LEVELS: 'levels'}],
    capabilities=quantizers.WeightCapabilities(
        index=INDEX, weight=_weight, update=_update, project=_project, validate=_validate,
        fit=_fit))


def _config(**fields):
  config = tiny_config('fake', num_classes=10, image_size=32, **fields)
  config.quant.weight_quantizer = 'toy_levels'
  return config


def _toy_params(params):
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
  return {path.rsplit('/', 1)[0]: None for path in flat if path.endswith('/' + INDEX)}


def test_dq_like_quantizer_trains_by_its_own_rule_resumes_validates_and_exports(tmp_path):
  workdir = str(tmp_path)
  assert train.train_and_evaluate(_config(num_train_steps=2), workdir)['step'] == 2
  assert train.train_and_evaluate(_config(), workdir)['step'] == 4
  assert [r['step'] for r in read_metrics(workdir) if r['split'] == 'train'] == [1, 2, 3, 4]

  config, variables = runs.read_workdir(workdir)
  params = flax.core.unfreeze(variables['params'])
  layers = _toy_params(params)
  assert layers
  groups = flax.traverse_util.flatten_dict(optim.parameter_groups(params), sep='/')
  mask = flax.traverse_util.flatten_dict(optim.decay_mask(params), sep='/')
  for layer in layers:
    assert (groups[f'{layer}/{INDEX}'], groups[f'{layer}/{LEVELS}']) == ('weights', 'levels')
    assert not mask[f'{layer}/{INDEX}']  # Decayed on the kernel it stands for, never itself.
    own = flax.traverse_util.unflatten_dict(
        {k[len(layer) + 1:]: v for k, v in flax.traverse_util.flatten_dict(
            params, sep='/').items() if k.startswith(layer + '/')}, sep='/')
    # The update rule ran: gradient steps alone would leave fractional indices.
    np.testing.assert_array_equal(own[INDEX], np.round(own[INDEX]))
  quantizers.validate_params(params)

  exported = export.export_model(config, variables)
  images = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
  logits = runs.model_from_config(config).apply(variables, images, train=False)
  np.testing.assert_allclose(export.infer(exported, images), logits, rtol=1e-5, atol=1e-5)

  layer = next(iter(layers))
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  flat[f'{layer}/{LEVELS}'] = flat[f'{layer}/{LEVELS}'][::-1]
  broken = flax.traverse_util.unflatten_dict(flat, sep='/')
  with pytest.raises(ValueError, match=f'Toy levels at {layer} are not increasing'):
    quantizers.validate_params(broken)
  with pytest.raises(export.InvalidVariablesError, match='Refusing to export: Toy levels'):
    export.export_model(config, {**variables, 'params': broken})
  quantizers.validate_params(optim.project_dq_params(broken))


def test_dq_like_quantizer_warm_starts_from_a_float_run(tmp_path):
  float_dir, toy_dir = str(tmp_path / 'float'), str(tmp_path / 'toy')
  train.train_and_evaluate(tiny_config('fake', num_classes=10, image_size=32, w_bits=32,
                                       a_bits=32, num_train_steps=2), float_dir)
  _, float_variables = runs.read_workdir(float_dir)
  config = _config(num_train_steps=2, init_from=float_dir)
  images = jnp.zeros((2, 32, 32, 3))
  variables = runs.model_from_config(config).init(jax.random.key(0), images, train=False)
  transferred = warm_start.transfer(variables, float_variables)
  float_params = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(float_variables['params']), sep='/')
  toy_params = flax.traverse_util.flatten_dict(transferred['params'], sep='/')
  for layer in _toy_params(transferred['params']):
    kernel = float_params[layer.removesuffix('/weight_quantizer') + '/kernel']
    expected = _fitted(jnp.asarray(kernel), 4)
    np.testing.assert_array_equal(toy_params[f'{layer}/{INDEX}'], expected[INDEX])
    np.testing.assert_array_equal(toy_params[f'{layer}/{LEVELS}'], expected[LEVELS])
  assert train.train_and_evaluate(config, toy_dir)['step'] == 2


def test_capabilities_are_checked_when_registered():
  with pytest.raises(ValueError, match='`index` and `weight` go together'):
    quantizers.register_weight_quantizer(
        'toy_no_weight', ToyLevelsWeight, param_groups=[{INDEX: 'weights', LEVELS: 'levels'}],
        capabilities=quantizers.WeightCapabilities(index=INDEX))
  with pytest.raises(ValueError, match='`fit` needs `weight`'):
    quantizers.register_weight_quantizer(
        'toy_fit_only', ToyLevelsWeight, param_groups=[{INDEX: 'weights', LEVELS: 'levels'}],
        capabilities=quantizers.WeightCapabilities(fit=_fit))
  with pytest.raises(ValueError, match='need the param_groups'):
    quantizers.register_weight_quantizer(
        'toy_no_groups', ToyLevelsWeight, capabilities=quantizers.WeightCapabilities())
  with pytest.raises(ValueError, match='already registered with other groups or capabilities'):
    quantizers.register_weight_quantizer(
        'toy_other_rule', ToyLevelsWeight, param_groups=[{INDEX: 'weights', LEVELS: 'levels'}],
        capabilities=quantizers.WeightCapabilities(index=INDEX, weight=_weight))
  with pytest.raises(ValueError, match="Unknown capability 'updates'"):
    quantizers.capability({INDEX: 0, LEVELS: 0}, 'updates')
  assert quantizers.capability({INDEX: 0, LEVELS: 0}, 'update') is _update
  assert quantizers.capability({'kernel': 0}, 'update') is None


def test_no_module_outside_quantizers_imports_dq_weight():
  package = pathlib.Path(quantizers.__file__).resolve().parents[1]
  importers = []
  for path in package.rglob('*.py'):
    if 'quantizers' in path.relative_to(package).parts:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        names = [f'{node.module}.{alias.name}' for alias in node.names] + [node.module or '']
      if any(name.split('.')[-1].startswith('dq_weight') or '.dq_weight' in name
             or name.endswith('.DQWeight')
             for name in names):
        importers.append(str(path.relative_to(package)))
  assert not importers, f'Modules outside dqnn/quantizers know DQ by name: {importers}'
