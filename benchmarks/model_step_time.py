"""Forward+backward step time of the model zoo on this CPU: FP vs DQ W2A2.

    python benchmarks/model_step_time.py [--steps=10] [--quick]

One process. Each (model, policy) is compiled and warmed up, then steps are timed round-robin so
that load changes on the machine hit all of them alike; prints the median and its ratio to FP.
The step is a jitted value_and_grad of the cross-entropy, including the BatchNorm and quantizer
state updates (no optimizer, so the numbers are the models' own cost).
"""
import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from dqnn.models import MODELS, QuantPolicy, create_model

POLICIES = {'FP': QuantPolicy(), 'DQ W2A2': QuantPolicy(w_bits=2, a_bits=2)}
# (model, batch): CIFAR ResNet-20 at its usual batch, the ImageNet models at a CPU-sized batch.
MODEL_BATCHES = (('cifar_resnet20', 128), ('resnet18', 8), ('mobilenet_v2', 8))
QUICK_MODEL_BATCHES = (('cifar_resnet20', 16), ('_resnet_tiny', 2), ('_mobilenet_v2_tiny', 2))


def make_step(name, policy, batch):
  """A zero-argument function that runs one step and returns its wall time."""
  model = create_model(name, num_classes=100, policy=policy)
  size = MODELS[name].image_size
  images = jax.random.uniform(jax.random.PRNGKey(0), (batch, size, size, 3))
  labels = jnp.arange(batch) % 100
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.PRNGKey(1), images)
  params, state = variables['params'], {k: v for k, v in variables.items() if k != 'params'}

  @jax.jit
  def step(params, state):
    def loss_fn(p):
      logits, new_state = model.apply({'params': p, **state}, images, train=True,
                                      mutable=['batch_stats', 'quant_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_state
    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return new_state, grads, loss

  carry = [state]

  def run():
    start = time.perf_counter()
    carry[0], grads, loss = step(params, carry[0])
    jax.block_until_ready((grads, loss))
    return time.perf_counter() - start

  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--quick', action='store_true',
                      help='small batches, tiny ImageNet-style models, 2 steps: a smoke run')
  args = parser.parse_args()
  model_batches = MODEL_BATCHES
  if args.quick:
    model_batches, args.steps, args.warmup = QUICK_MODEL_BATCHES, 2, 1
  runs = {(name, batch, policy_name): make_step(name, policy, batch)
          for name, batch in model_batches for policy_name, policy in POLICIES.items()}
  for run in runs.values():
    for _ in range(args.warmup):
      run()
  times = {key: [] for key in runs}
  for _ in range(args.steps):
    for key, run in runs.items():
      times[key].append(run())
  print(f'{jax.devices()[0].device_kind} x{jax.device_count()}, forward+backward, '
        f'median of {args.steps} steps after {args.warmup} warm-up')
  print(f'{"model":<20} {"batch":>5} {"policy":<8} {"ms/step":>9} {"img/s":>8} {"vs FP":>7}')
  for (name, batch, policy_name), samples in times.items():
    median = statistics.median(samples)
    fp = statistics.median(times[(name, batch, 'FP')])
    print(f'{name:<20} {batch:>5} {policy_name:<8} {1e3 * median:9.1f} {batch / median:8.1f} '
          f'{median / fp:6.2f}x')


if __name__ == '__main__':
  main()
