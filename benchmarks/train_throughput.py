"""Training throughput of every model: FP vs DQ W2A2, and the first step's compile time.

    python benchmarks/train_throughput.py [--models=a,b] [--steps=5] [--quick] [--json]

One process. The step is dqnn.train.train_step itself (forward, backward, optimizer incl. the DQ
direct update, BatchNorm/quantizer state), jitted with the same shardings as training: state
replicated, batch split over every device along a 'data' mesh axis (so
XLA_FLAGS=--xla_force_host_platform_device_count=N measures N-way data parallelism; see
data_parallel_scaling.py). Each (model, policy) is compiled — the time of `lower().compile()` is
the compile column — and warmed up, then steps are timed round-robin so that load changes hit
all of them alike. Prints the median step time, img/s and the DQ/FP ratio. Batches: CIFAR models
at 32x32, ImageNet models at 224x224 with a CPU-sized batch (flags change both).
"""
import argparse
import functools
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import base
from dqnn import data as dqnn_data
from dqnn import run_builder
from dqnn import runs
from dqnn import train
from dqnn.data import train_input
from dqnn.models import CIFAR_MODELS, IMAGENET_MODELS, MODELS

# The experiments' ImageNet models and the pre-activation ResNet-18.
IMAGENET = (*IMAGENET_MODELS, 'preact_resnet18')
QUICK = ('_cifar_resnet_tiny', '_mobilenet_v2_tiny')
POLICIES = {'FP': 32, 'DQ W2A2': 2}


def make_step(model_name: str, bits: int, batch: int, with_batch_input: bool = False):
  """Compiles one training step; returns (compile seconds, zero-argument timed step).

  With `with_batch_input`, also a third function that runs the step on a given host batch
  (put on the devices as `dqnn.train` does) and waits for it.
  """
  config = base.get_base_config()
  config.model = model_name
  config.quant.w_bits = config.quant.a_bits = bits
  size = MODELS[model_name].image_size
  model = runs.model_from_config(config, classes=100)
  tx = run_builder.create_optimizer(config, optax.constant_schedule(0.01))
  mesh = Mesh(np.array(jax.devices()), ('data',))
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  images = jax.random.randint(jax.random.key(0), (batch, size, size, 3), 0, 256).astype(jnp.uint8)
  state = train.initial_state(model, tx, jax.random.key(1),
                              dqnn_data.standardize(images, 'imagenet2012'))
  state = jax.device_put(state, replicated)
  data = jax.device_put({'image': images, 'label': jnp.arange(batch, dtype=jnp.int32) % 100},
                        batch_sharding)
  step = jax.jit(
      functools.partial(train.train_step, model=model, tx=tx,
                        make_batch=train_input.HostInput.make_batch,
                        input_statistics='imagenet2012', label_smoothing=0.0),
      in_shardings=(replicated, batch_sharding), out_shardings=replicated, donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, data).compile()
  compile_seconds = time.perf_counter() - start
  carry = [state]

  def run():
    start = time.perf_counter()
    carry[0], step_metrics, finite = compiled(carry[0], data)
    jax.block_until_ready((carry[0], step_metrics, finite))
    return time.perf_counter() - start

  def step_on(host_batch):
    batch_on_devices = jax.device_put(
        {'image': host_batch['image'], 'label': host_batch['label']}, batch_sharding)
    carry[0], step_metrics, finite = compiled(carry[0], batch_on_devices)
    jax.block_until_ready((carry[0], step_metrics, finite))

  return (compile_seconds, run, step_on) if with_batch_input else (compile_seconds, run)


def measure(models, batch_for, steps: int, warmup: int) -> list[dict]:
  """Round-robin timing of every (model, policy); one result dict per pair."""
  entries = []
  for name in models:
    for policy, bits in POLICIES.items():
      compile_seconds, run = make_step(name, bits, batch_for(name))
      for _ in range(warmup):
        run()
      entries.append({'model': name, 'policy': policy, 'batch': batch_for(name),
                      'image_size': MODELS[name].image_size,
                      'compile_s': compile_seconds, 'run': run, 'times': []})
  for round_index in range(steps):
    shift = round_index % len(entries)
    for entry in entries[shift:] + entries[:shift]:
      entry['times'].append(entry['run']())
  results = []
  for entry in entries:
    seconds = statistics.median(entry.pop('times'))
    entry.pop('run')
    results.append({**entry, 'ms_per_step': 1000 * seconds,
                    'img_per_s': entry['batch'] / seconds, 'devices': jax.device_count()})
  for entry in results:
    float_ms = next(r['ms_per_step'] for r in results
                    if r['model'] == entry['model'] and r['policy'] == 'FP')
    entry['vs_fp'] = entry['ms_per_step'] / float_ms
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default=','.join(CIFAR_MODELS + IMAGENET))
  parser.add_argument('--cifar_batch', type=int, default=128)
  parser.add_argument('--imagenet_batch', type=int, default=8)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--quick', action='store_true', help='two tiny models, batch 8, 2 steps')
  parser.add_argument('--json', action='store_true', help='print one JSON list instead')
  args = parser.parse_args()
  models = QUICK if args.quick else [m for m in args.models.split(',') if m]
  unknown = [m for m in models if m not in MODELS]
  if unknown:
    raise SystemExit(f'Unknown models {unknown}; choose from {sorted(MODELS)}.')
  if args.quick:
    args.cifar_batch = args.imagenet_batch = 8
    args.steps = 2
  batch_for = lambda name: (args.cifar_batch if MODELS[name].image_size <= 64
                            else args.imagenet_batch)
  results = measure(models, batch_for, args.steps, args.warmup)
  if args.json:
    print(json.dumps(results))
    return
  print(f'{jax.device_count()} {jax.devices()[0].platform} device(s); median of {args.steps} '
        'steps after warm-up, round-robin')
  print('| model | input | batch | policy | compile s | ms/step | img/s | vs FP |')
  print('| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |')
  for r in results:
    print(f'| {r["model"]} | {r["image_size"]} | {r["batch"]} | {r["policy"]} | '
          f'{r["compile_s"]:.1f} | {r["ms_per_step"]:.1f} | {r["img_per_s"]:.1f} | '
          f'{r["vs_fp"]:.2f}x |')


if __name__ == '__main__':
  main()
