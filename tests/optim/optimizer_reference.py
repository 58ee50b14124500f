"""A tiny model and a few `create_optimizer` steps whose results are pinned.

`reference_run(options)` returns the parameters after three steps with fixed gradients; the
pinned values in `create_optimizer_reference.npz` were produced by this module (run it as a
script) before `create_optimizer` became a use of `dqnn.optim.wrap`; they are bitwise on the
machine that wrote them and within a few ulps on other CPU models.
"""
import pathlib

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dqnn import optim
from dqnn.layers import QuantConv

REFERENCE = pathlib.Path(__file__).with_name('create_optimizer_reference.npz')
OPTIONS = {
    'default': dict(weight_decay_rate=5e-4),
    'variants': dict(weight_decay_rate=1e-3, nesterov=True, level_lr_scale=0.3,
                     level_gradient='sum', quantizer_optimizer='sgd', quantizer_lr_scale=0.1,
                     residual=False, level_update='lloyd'),
}


class Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.BatchNorm(use_running_average=False)(nn.Conv(4, (3, 3))(x)))
    x = QuantConv(4, (3, 3), w_bits=2, a_bits=2, act_options={'update': 'gradient'})(x)
    x = QuantConv(4, (3, 3), w_bits=3, a_bits=2, weight_options={'symmetric': True})(x)
    x = QuantConv(4, (3, 3), w_bits=2, a_bits=2, weight_quantizer='lsq', act_quantizer='pact')(x)
    return nn.Dense(3)(x.mean((1, 2)))


def reference_run(options: dict) -> dict:
  params = Net().init(jax.random.PRNGKey(0), jnp.ones((2, 6, 6, 3)))['params']
  schedule = optax.cosine_decay_schedule(0.1, 10)
  tx = optim.create_optimizer(schedule, **options)
  opt_state = tx.init(params)
  key = jax.random.PRNGKey(1)
  for _ in range(3):
    key, *keys = jax.random.split(key, len(jax.tree.leaves(params)) + 1)
    grads = jax.tree.unflatten(jax.tree.structure(params), [
        0.1 * jax.random.normal(k, p.shape) for k, p in zip(keys, jax.tree.leaves(params))])
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')


if __name__ == '__main__':
  np.savez(REFERENCE, **{f'{name}:{path}': np.asarray(value) for name, options in OPTIONS.items()
                         for path, value in reference_run(options).items()})
