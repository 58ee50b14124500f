"""Train-step time of a ResNet-20-sized conv stack: FP vs DQ / LQ-Nets / LSQ W2A2, on this CPU.

    python benchmarks/quantizer_overhead.py [--batch=128] [--steps=20] [--quick]

One process; each configuration is compiled and warmed up, then steps are timed round-robin
(one step of each configuration in turn, the order rotating every round) so that load changes
on the machine hit all of them alike. Prints the median step time and its ratio to FP. The step is the whole training step:
forward, backward, optimizer (incl. the DQ direct update) and the BatchNorm/quantizer state.
"""
import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dqnn import optim
from dqnn.layers import QuantConv
from dqnn.quantizers import FULL_PRECISION

CONFIGS = {
    'FP': dict(w_bits=FULL_PRECISION, a_bits=FULL_PRECISION),
    'DQ W2A2': dict(w_bits=2, a_bits=2, weight_quantizer='dq', act_quantizer='dq'),
    'LQ-Nets W2A2': dict(w_bits=2, a_bits=2, weight_quantizer='lqnets', act_quantizer='lqnets'),
    'LSQ W2A2': dict(w_bits=2, a_bits=2, weight_quantizer='lsq', act_quantizer='lsq'),
}


class ConvStack(nn.Module):
  """ResNet-20's 19 3x3 convs (16/32/64 channels), BN+ReLU, float first conv and head."""
  quant: dict

  @nn.compact
  def __call__(self, x):
    norm = lambda: nn.BatchNorm(use_running_average=False, momentum=0.9)
    x = nn.relu(norm()(nn.Conv(16, (3, 3), use_bias=False)(x)))
    for stage, features in enumerate((16, 32, 64)):
      for layer in range(6):
        stride = 2 if stage > 0 and layer == 0 else 1
        x = QuantConv(features, (3, 3), strides=stride, use_bias=False, **self.quant)(x)
        x = nn.relu(norm()(x))
    return nn.Dense(100)(x.mean((1, 2)))


def make_step(quant, batch):
  model = ConvStack(quant)
  images = jax.random.normal(jax.random.PRNGKey(0), (batch, 32, 32, 3))
  labels = jnp.arange(batch) % 100
  variables = model.init(jax.random.PRNGKey(1), images)
  params, state = variables['params'], {k: v for k, v in variables.items() if k != 'params'}
  tx = optim.create_optimizer(0.1, weight_decay_rate=5e-4)

  @jax.jit
  def step(params, state, opt_state):
    def loss_fn(p):
      logits, new_state = model.apply({'params': p, **state}, images,
                                      mutable=['batch_stats', 'quant_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_state
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), state, opt_state, loss

  carry = [params, state, tx.init(params)]

  def run():
    start = time.perf_counter()
    *carry[:], loss = step(*carry)
    jax.block_until_ready(loss)
    return time.perf_counter() - start

  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--quick', action='store_true', help='batch 16, 3 steps: a smoke run')
  args = parser.parse_args()
  if args.quick:
    args.batch, args.steps, args.warmup = 16, 3, 1
  runs = {name: make_step(quant, args.batch) for name, quant in CONFIGS.items()}
  for run in runs.values():
    for _ in range(args.warmup):
      run()
  times = {name: [] for name in runs}
  names = list(runs)
  for round_ in range(args.steps):
    # Rotate the order each round so no configuration always runs first.
    for name in names[round_ % len(names):] + names[:round_ % len(names)]:
      times[name].append(runs[name]())
  fp = statistics.median(times['FP'])
  print(f'{jax.devices()[0].device_kind} x{jax.device_count()}, batch {args.batch}, '
        f'median of {args.steps} steps after {args.warmup} warm-up')
  print(f'{"config":<14} {"ms/step":>9} {"img/s":>8} {"vs FP":>7}')
  for name, samples in times.items():
    median = statistics.median(samples)
    print(f'{name:<14} {1e3 * median:9.1f} {args.batch / median:8.0f} {median / fp:6.2f}x')


if __name__ == '__main__':
  main()
