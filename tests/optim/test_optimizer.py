import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optimizer_reference
from dqnn import optim
from dqnn import quantizers
from dqnn.layers import QuantConv
from dqnn.quantizers import dq_weight

# Random gradients are not those of a forward pass: wrap_optimizer says so, rightly.
pytestmark = pytest.mark.filterwarnings('ignore:DQ weights at .* receive gradients')


@pytest.mark.parametrize('name', sorted(optimizer_reference.OPTIONS))
def test_create_optimizer_results_are_unchanged(name):
  # XLA's CPU code differs by a few ulps between CPU models, so the pin holds to 1e-5, not bitwise:
  # any change to the update rule moves these values by far more.
  pinned = np.load(optimizer_reference.REFERENCE)
  result = optimizer_reference.reference_run(optimizer_reference.OPTIONS[name])
  for path, value in result.items():
    np.testing.assert_allclose(np.asarray(value), pinned[f'{name}:{path}'], rtol=1e-5, atol=1e-7,
                               err_msg=path)


def _params(seed=0):
  return optimizer_reference.Net().init(jax.random.PRNGKey(seed), jnp.ones((2, 6, 6, 3)))['params']


def _dq_invariants_hold(params):
  """Every DQ quantizer: strictly increasing levels, index in [-1/2, L-1/2] exactly."""
  quantizers.validate_params(params)
  return True


def _random_grads(params, key, scale):
  leaves = jax.tree.leaves(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(jax.tree.structure(params), [
      scale * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])


@pytest.mark.parametrize('base', [
    optax.sgd(0.5, momentum=0.9),
    optax.adamw(optax.cosine_decay_schedule(0.05, 20), weight_decay=0.1),
    optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.05)),
])
def test_any_base_optimizer_keeps_dq_invariants(base):
  params = _params()
  tx = optim.wrap_optimizer(base, weight_decay=1e-3)
  state = tx.init(params)
  step = jax.jit(tx.update)
  for i in range(5):
    updates, state = step(_random_grads(params, jax.random.PRNGKey(i), 3.0), state, params)
    params = optax.apply_updates(params, updates)
    assert _dq_invariants_hold(params)


def test_plain_optimizer_breaks_dq_and_projection_restores_it():
  params = _params()
  tx = optax.sgd(1.0)
  updates, _ = tx.update(_random_grads(params, jax.random.PRNGKey(3), 3.0), tx.init(params))
  broken = optax.apply_updates(params, updates)
  with pytest.raises(ValueError, match='wrap_optimizer'):
    quantizers.validate_params(broken)
  repaired = optim.project_dq_params(broken)
  quantizers.validate_params(repaired)
  # Non-DQ leaves are untouched, and a valid tree is a fixed point of the projection.
  np.testing.assert_array_equal(repaired['Dense_0']['kernel'], broken['Dense_0']['kernel'])
  for a, b in zip(jax.tree.leaves(optim.project_dq_params(params)), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


def test_base_optimizer_sees_quantized_weights_not_indices():
  params = _params()
  seen = {}

  def record(updates, state, params=None):
    # Called once per group sharing the base optimizer; the weights group holds the index.
    index = params['QuantConv_0']['weight_quantizer']['index']
    if isinstance(index, jax.Array):
      seen['index'] = index
    return updates, state

  tx = optim.wrap_optimizer(optax.GradientTransformation(lambda _: optax.EmptyState(), record))
  tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_array_equal(
      seen['index'], dq_weight.quantized_weight(params['QuantConv_0']['weight_quantizer']))


def test_eight_bit_index_stays_inside_its_domain_exactly():
  kernel = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 16, 8))
  params = {'w': dq_weight.params_from_kernel(kernel, 8)}
  tx = optim.wrap_optimizer(optax.sgd(0.3))
  state = tx.init(params)
  step = jax.jit(tx.update)
  for i in range(20):
    updates, state = step(_random_grads(params, jax.random.PRNGKey(i), 1.0), state, params)
    params = optax.apply_updates(params, updates)
    index = params['w']['index']
    assert float(index.min()) >= -0.5 and float(index.max()) <= 255.5
  assert float(index.min()) == -0.5  # weights are pushed onto the domain's end, not past it


class _ScannedBlock(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    x = QuantConv(4, (3, 3), w_bits=2, a_bits=2, use_bias=False)(x)
    return nn.relu(x), None


class _ScannedNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    stack = nn.scan(_ScannedBlock, variable_axes={'params': 0, 'quant_stats': 0},
                    split_rngs={'params': True}, length=3)
    x, _ = stack(name='blocks')(x, None)
    return nn.Dense(3)(x.mean((1, 2)))


def test_scanned_quantized_layers_train_with_the_optimizer():
  x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(1), (4, 6, 6, 3)))
  labels = jnp.arange(4) % 3
  variables = _ScannedNet().init(jax.random.PRNGKey(0), x)
  params, stats = variables['params'], variables['quant_stats']
  assert params['blocks']['QuantConv_0']['weight_quantizer']['levels'].shape == (3, 4, 4)
  tx = optim.create_optimizer(0.5, weight_decay_rate=1e-3)
  state = tx.init(params)

  @jax.jit
  def step(params, stats, state):
    def loss_fn(p):
      logits, new = _ScannedNet().apply({'params': p, 'quant_stats': stats}, x,
                                        mutable=['quant_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new
    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), new['quant_stats'], state, loss

  first = None
  for _ in range(5):
    params, stats, state, loss = step(params, stats, state)
    first = float(loss) if first is None else first
    quantizers.validate_params(params)
  assert float(loss) < first
  # Each stacked layer is its own DQ layer: its weights lie on its own level row.
  quantizer = params['blocks']['QuantConv_0']['weight_quantizer']
  for layer in range(3):
    own = jax.tree.map(lambda a: a[layer], quantizer)
    w_q = dq_weight.quantized_weight(own).reshape(-1, 4)
    assert bool(jnp.all(jnp.any(w_q[:, :, None] == own['levels'][None], axis=-1)))
