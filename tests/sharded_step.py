"""One training step on a 1-device and a 4-device mesh; prints the largest difference as JSON.

Run by tests/test_sharding.py in a subprocess with 4 virtual CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4), since the device count is fixed at start.
"""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dqnn import optim
from dqnn.layers import QuantConv


class Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.BatchNorm(use_running_average=False)(nn.Conv(8, (3, 3), use_bias=False)(x)))
    # The first conv's DQ activation levels are trained by gradient (params), the second's are
    # refit in closed form (quant_stats): the device-count check covers both.
    x = QuantConv(8, (3, 3), w_bits=2, a_bits=2, use_bias=False,
                  act_options={'update': 'gradient'})(x)
    x = nn.relu(nn.BatchNorm(use_running_average=False)(x))
    x = QuantConv(8, (3, 3), w_bits=2, a_bits=2, act_options={'update': 'closed_form'})(x)
    return nn.Dense(10)(nn.relu(x).mean((1, 2)))


def train_step(variables, opt_state, images, labels, tx):
  params, state = variables['params'], {k: v for k, v in variables.items() if k != 'params'}

  def loss_fn(p):
    logits, new_state = Net().apply({'params': p, **state}, images,
                                    mutable=['batch_stats', 'quant_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_state

  (_, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return {'params': optax.apply_updates(params, updates), **new_state}, opt_state


def run(devices, images, labels):
  mesh = Mesh(np.array(devices), ('data',))
  replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  variables = jax.device_put(Net().init(jax.random.PRNGKey(0), images), replicated)
  tx = optim.create_optimizer(0.1, weight_decay_rate=5e-4)
  opt_state = jax.device_put(tx.init(variables['params']), replicated)
  images, labels = jax.device_put(images, batch), jax.device_put(labels, batch)
  step = jax.jit(lambda v, o, x, y: train_step(v, o, x, y, tx), out_shardings=replicated)
  assert len(images.sharding.device_set) == len(devices)
  for _ in range(2):
    variables, opt_state = step(variables, opt_state, images, labels)
  return jax.device_get(variables)


def main():
  assert jax.device_count() == 4, jax.devices()
  images = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 3)))
  labels = jnp.arange(16) % 10
  one = run(jax.devices()[:1], images, labels)
  four = run(jax.devices(), images, labels)
  assert 'act_quantizer' in one['params']['QuantConv_0'], 'no gradient-trained levels'
  assert 'act_quantizer' in one['quant_stats']['QuantConv_1'], 'no closed-form levels'
  # Largest |a - b| in units of the tolerance 1e-6 + 1e-4 |a|: <= 1 means equal to float precision.
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b) / (1e-6 + 1e-4 * np.abs(a)))),
                       one, four)
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), one, jax.device_get(
      Net().init(jax.random.PRNGKey(0), images)))
  print(json.dumps({
      'max_diff_in_tolerances': max(jax.tree.leaves(diffs)),
      'diffs': {jax.tree_util.keystr(p): d for p, d in jax.tree_util.tree_leaves_with_path(diffs)},
      'all_moved': all(jax.tree.leaves(moved))}))


if __name__ == '__main__':
  main()
