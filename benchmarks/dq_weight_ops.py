"""DQ's per-weight work on one large kernel: level-table lookups by select vs by gather.

    python benchmarks/dq_weight_ops.py [--shape=9216,4096] [--bits=2] [--steps=10]

DQ does O(#weights) work every step that a float model does not: `w_q = levels[round(index)]`
(forward), the per-level gradient sums (backward), and the direct update `t = s(index) + u`,
`index' = s^-1(t)`. `dqnn.quantizers.levels` computes the table lookups and `s`, `s^-1` as a
short chain of elementwise selects (up to 16 levels); the `gather` variant below is the
take_along_axis / searchsorted formulation it replaced. Both are timed round-robin in one
process on the same kernel (default: AlexNet's fc6, 37.7 M weights), next to one float
SGD-momentum step on a kernel of the same size for scale. Prints median milliseconds and ratios.
"""
import argparse
import contextlib
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from dqnn import optim
from dqnn.quantizers import dq_weight
from dqnn.quantizers import levels as lv


def _gather_lookup(levels, level_index):
  return jnp.take_along_axis(levels.T, level_index, axis=0)


def _gather_soft_value(index, levels):
  lower = jnp.clip(jnp.floor(index), 0, levels.shape[-1] - 2).astype(jnp.int32)
  lo = _gather_lookup(levels, lower)
  return lo + (index - lower) * (_gather_lookup(levels, lower + 1) - lo)


def _gather_fractional_index(values, levels):
  num_levels = levels.shape[-1]
  below = jax.vmap(lambda t, v: jnp.searchsorted(t, v, side='right', method='compare_all'),
                   in_axes=(0, 1), out_axes=1)
  lower = jnp.clip(below(levels, values) - 1, 0, num_levels - 2)
  lo = _gather_lookup(levels, lower)
  index = lower + (values - lo) / (_gather_lookup(levels, lower + 1) - lo)
  return jnp.clip(index, -0.5, num_levels - 0.5)


@contextlib.contextmanager
def gather_formulation():
  """Traces `dqnn.quantizers.levels` with the gather-based lookups while active."""
  saved = lv.lookup, lv.soft_value, lv.fractional_index
  lv.lookup, lv.soft_value, lv.fractional_index = (_gather_lookup, _gather_soft_value,
                                                   _gather_fractional_index)
  try:
    yield
  finally:
    lv.lookup, lv.soft_value, lv.fractional_index = saved


def dq_step_fn(params):
  """Forward lookup, backward to index and levels, and the optimizer incl. the direct update."""
  tx = optim.create_optimizer(optax.constant_schedule(0.01), momentum=0.9, weight_decay_rate=5e-4)
  opt_state = tx.init(params)

  def step(params, opt_state, upstream):
    def loss(p):
      return jnp.vdot(dq_weight.quantized_weight(p['layer']['weight_quantizer']), upstream)
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return jax.jit(step, donate_argnums=(0, 1)), opt_state


def float_step_fn(kernel):
  tx = optax.sgd(0.01, momentum=0.9)
  opt_state = tx.init(kernel)

  def step(kernel, opt_state, upstream):
    updates, opt_state = tx.update(upstream, opt_state, kernel)
    return optax.apply_updates(kernel, updates), opt_state

  return jax.jit(step, donate_argnums=(0, 1)), opt_state


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shape', default='9216,4096')
  parser.add_argument('--bits', type=int, default=2)
  parser.add_argument('--steps', type=int, default=10)
  args = parser.parse_args()
  shape = tuple(int(d) for d in args.shape.split(','))
  kernel = 0.01 * jax.random.normal(jax.random.key(0), shape)
  upstream = jax.random.normal(jax.random.key(1), shape)
  quantizer = dq_weight.params_from_kernel(kernel, args.bits)

  runs = {}
  for name in ('select (current)', 'gather (previous)'):
    with gather_formulation() if name.startswith('gather') else contextlib.nullcontext():
      step, opt_state = dq_step_fn({'layer': {'weight_quantizer': quantizer}})
      state = [jax.tree.map(jnp.copy, {'layer': {'weight_quantizer': quantizer}}), opt_state]
      state = list(step(*state, upstream))  # Compiles under the chosen formulation.
    runs[name] = (step, state)
  step, opt_state = float_step_fn(kernel)
  runs['float SGD step'] = (step, [jnp.copy(kernel), opt_state])

  times = {name: [] for name in runs}
  names = list(runs)
  for i in range(args.steps):
    for name in names[i % len(names):] + names[:i % len(names)]:
      step, state = runs[name]
      start = time.perf_counter()
      state[:] = step(*state, upstream)
      jax.block_until_ready(state)
      times[name].append(time.perf_counter() - start)
  median = {name: 1e3 * statistics.median(t) for name, t in times.items()}
  print(f'kernel {shape} ({kernel.size / 1e6:.1f} M weights), {args.bits} bits, '
        f'median of {args.steps}, {jax.devices()[0].platform}')
  for name, ms in median.items():
    print(f'  {name:18s} {ms:9.1f} ms   {ms / median["select (current)"]:5.2f}x current')


if __name__ == '__main__':
  main()
