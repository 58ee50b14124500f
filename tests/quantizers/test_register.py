"""A quantizer from outside dqnn, plugged in through the public `register` API alone: it trains,
resumes from a checkpoint, is grouped by the optimizer, reports, and exports once it has a
read-out (before that, export names the method to write)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn import export
from dqnn import optim
from dqnn import quantizers
from dqnn import report
from dqnn import runs
from dqnn import train
from train_testlib import read_metrics, tiny_config


class GridActivation(nn.Module):
  """Rounds `x` to a learned uniform grid `k * step` on [0, (2**bits - 1) * step]."""
  bits: int
  signed: bool = False
  initial_step: float = 0.5

  @nn.compact
  def __call__(self, x):
    step = self.param('toy_step', lambda _: jnp.asarray(self.initial_step, jnp.float32))
    clipped = jnp.clip(x.astype(jnp.float32) / step, 0, 2 ** self.bits - 1)
    rounded = clipped + jax.lax.stop_gradient(jnp.round(clipped) - clipped)
    return (rounded * step).astype(x.dtype)


class ExportableGridActivation(GridActivation):

  def nominal_levels(self, variables):
    return jnp.arange(2 ** self.bits, dtype=jnp.float32) * variables['params']['toy_step'], False


quantizers.register_act_quantizer('toy_grid', GridActivation,
                                  param_groups=[{'toy_step': 'quantizer'}])
quantizers.register_act_quantizer('toy_grid_exportable', ExportableGridActivation,
                                  param_groups=[{'toy_step': 'quantizer'}])


def _config(method, **fields):
  config = tiny_config('fake', num_classes=10, image_size=32, **fields)
  config.quant.act_quantizer = method
  config.quant.act_options = {'initial_step': 0.25}
  return config


def test_registered_quantizer_trains_resumes_reports_and_says_what_export_needs(tmp_path):
  workdir = str(tmp_path)
  config = _config('toy_grid', num_train_steps=2)
  assert train.train_and_evaluate(config, workdir)['step'] == 2
  config = _config('toy_grid')
  assert train.train_and_evaluate(config, workdir)['step'] == 4
  assert [r['step'] for r in read_metrics(workdir) if r['split'] == 'train'] == [1, 2, 3, 4]

  _, variables = runs.read_workdir(workdir)
  groups = optim.parameter_groups(variables['params'])
  steps = [group for path, group in jax.tree_util.tree_leaves_with_path(groups)
           if 'toy_step' in jax.tree_util.keystr(path)]
  assert steps and set(steps) == {'quantizer'}

  rows = report.config_costs(config, variables)
  assert any(row.a_bits == 2 for row in rows)

  with pytest.raises(export.UnsupportedModelError,
                     match=r'GridActivation has no read-out: give it a method '
                           r'`nominal_levels\(self, variables\)'):
    export.export_workdir(workdir)


def test_registered_quantizer_with_a_read_out_exports_its_logits(tmp_path):
  workdir = str(tmp_path)
  config = _config('toy_grid_exportable')
  train.train_and_evaluate(config, workdir)
  config, variables = runs.read_workdir(workdir)
  exported = export.export_model(config, variables)
  assert any(op['op'] == 'act_quantize' for op in exported.header['ops'])
  images = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
  logits = runs.model_from_config(config).apply(variables, images, train=False)
  # Up to ties at the midpoints, which random images do not hit.
  np.testing.assert_allclose(export.infer(exported, images), logits, rtol=1e-5, atol=1e-5)


def test_registering_checks_the_class_and_options():
  with pytest.raises(ValueError, match="'toy_grid' is already registered as "
                                       'GridActivation; choose another name'):
    quantizers.register_act_quantizer('toy_grid', ExportableGridActivation)
  with pytest.raises(TypeError, match='needs the fields bits, signed'):
    quantizers.register_act_quantizer('toy_unsigned', nn.Dense)
  with pytest.raises(ValueError, match=r"Unknown options \['step'\] for activation quantizer "
                                       r"'toy_grid' \(GridActivation\); it takes "
                                       r'initial_step'):
    quantizers.activation_quantizer('toy_grid', 2, {'step': 1.0})
  with pytest.raises(ValueError, match='Unknown parameter groups'):
    quantizers.register_act_quantizer('toy_other', GridActivation,
                                      param_groups=[{'toy_step': 'steps'}])
  with pytest.raises(TypeError, match='flax.linen Module class'):
    quantizers.register_weight_quantizer('toy_function', jnp.round)
