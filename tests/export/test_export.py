"""Train -> export -> file -> load -> logits: equal to the trained model's eval-mode logits."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dqnn import checkpoint
from dqnn import export
from dqnn import runs
from dqnn.export import format as fmt

# One worker runs the module, so its module-scoped training runs once (pytest.ini: loadgroup).
pytestmark = pytest.mark.xdist_group('export')

_IMAGES = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)


def _trained_logits(workdir):
  """The training code's own model and checkpoint, applied in eval mode."""
  with open(workdir / 'config.json') as f:
    config = ml_collections.ConfigDict(json.load(f))
  state = checkpoint.restore_state_dict(str(workdir))
  model = runs.model_from_config(config, classes=100)
  variables = {name: state[name] for name in ('params', 'batch_stats', 'quant_stats')}
  return model.apply(variables, jnp.asarray(_IMAGES), train=False), model, variables


@pytest.fixture(scope='session')
def exported_file(trained_workdir, tmp_path_factory):
  path = tmp_path_factory.mktemp('export') / 'model.dqnn'
  export.save(export.export_workdir(str(trained_workdir)), path)
  return path


def test_loaded_file_reproduces_trained_logits_bitwise(trained_workdir, exported_file):
  expected, model, variables = _trained_logits(trained_workdir)
  loaded = export.load(exported_file, expected_model='_cifar_resnet_tiny')
  # Op by op, the runner issues the same XLA operations as flax on the same operands.
  np.testing.assert_array_equal(export.infer(loaded, _IMAGES, jit=False), expected)
  # Compiled as one program each, XLA may fuse the BN arithmetic differently: rounding only.
  jitted = jax.jit(lambda x: model.apply(variables, x, train=False))(_IMAGES)
  np.testing.assert_allclose(export.infer(loaded, _IMAGES), jitted, rtol=1e-5, atol=1e-5)


def test_file_holds_no_float_kernels_for_quantized_layers(exported_file):
  loaded = export.load(exported_file)
  quantized = [op for op in loaded.header['ops'] if op['op'] in ('conv', 'dense')
               and 'indices' in op['kernel']]
  # The tiny ResNet's four body convs are W2; stem and head stay float.
  assert len(quantized) == 4
  for op in quantized:
    count = math.prod(op['kernel']['shape'])
    assert loaded.tensors[op['kernel']['indices']].nbytes == math.ceil(2 * count / 8)
    assert loaded.tensors[op['kernel']['levels']].shape == (op['kernel']['shape'][-1], 4)
    assert f'{op["name"]}/kernel' not in loaded.tensors
  assert sum(op['op'] == 'act_quantize' for op in loaded.header['ops']) == 4


def test_one_flipped_index_changes_the_logits(exported_file):
  loaded = export.load(exported_file)
  clean = export.infer(loaded, _IMAGES, jit=False)
  name = 'stage1/block0/conv1/indices'
  tensors = dict(loaded.tensors)
  corrupted = tensors[name].copy()
  corrupted[0] ^= 0b11  # Index 0 (the low two bits of byte 0) moves to another level.
  tensors[name] = corrupted
  flipped = fmt.from_bytes(fmt.to_bytes(fmt.ExportedModel(loaded.header, tensors)))
  assert not np.array_equal(export.infer(flipped, _IMAGES, jit=False), clean)


def test_folded_export_matches_unfolded(trained_workdir):
  exported = export.export_workdir(str(trained_workdir))
  folded = export.fold_batch_norm(exported)
  assert set(folded.header['folded_batch_norm'].values()) == {
      f'folded into {name}' for name in ('stem_conv', 'stage1/block0/conv1',
                                         'stage1/block0/conv2', 'stage2/block0/conv1',
                                         'stage2/block0/conv2')}
  assert not any(op['op'] == 'batch_norm' for op in folded.header['ops'])
  np.testing.assert_allclose(export.infer(folded, _IMAGES), export.infer(exported, _IMAGES),
                             rtol=1e-4, atol=1e-5)


def test_cli_writes_a_loadable_file(trained_workdir, tmp_path):
  out = tmp_path / 'cli.dqnn'
  result = subprocess.run(
      [sys.executable, '-m', 'dqnn.export', f'--workdir={trained_workdir}', f'--out={out}',
       '--fold_batch_norm'], capture_output=True, text=True, check=False,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr
  assert 'folded into stem_conv' in result.stdout
  assert export.load(out, expected_model='_cifar_resnet_tiny').header['folded_batch_norm']


@pytest.mark.parametrize('field, corrupt, named', [
    ('levels', lambda levels: levels[..., ::-1], 'are not strictly increasing'),
    ('index', lambda index: np.full_like(index, 1e6), 'leaves its domain'),
])
def test_malformed_dq_parameters_are_refused(trained_workdir, field, corrupt, named):
  config, variables = runs.read_workdir(str(trained_workdir))
  quantizer = variables['params']['stage1']['block0']['conv1']['weight_quantizer']
  field = next(name for name in quantizer if name.endswith(field))  # levels or half_levels
  quantizer[field] = corrupt(quantizer[field])
  with pytest.raises(export.InvalidVariablesError,
                     match=f'Refusing to export: DQ .* at stage1/block0/conv1/weight_quantizer '
                           f'.*{named}'):
    export.export_model(config, variables)


def test_cli_errors_are_one_line_without_a_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'dqnn.export', f'--workdir={tmp_path / "nowhere"}',
       f'--out={tmp_path / "x.dqnn"}'], capture_output=True, text=True, check=False,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'nowhere' in result.stderr and 'is not a training run' in result.stderr
