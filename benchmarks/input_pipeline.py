"""Input pipeline throughput vs the train step's demand, and the step fed by the pipeline.

    python benchmarks/input_pipeline.py --data_dir=$TFDS_DATA_DIR [--datasets=cifar100,imagenet2012]
        [--steps=10] [--quick]

For each prepared dataset (see `python -m dqnn.data.prepare`), three numbers in one process:
1. the training pipeline alone (decode, augment, batch; after its shuffle buffer has filled),
2. the DQ W2A2 train step alone on one in-memory batch (train_throughput.make_step),
3. the same step fed by the pipeline, as in `dqnn.train` (device_put of every batch).
The pipeline is not the bottleneck when (3) matches (2), which needs (1) well above (2).
CIFAR-100 uses cifar_resnet20 at batch 128, ImageNet resnet18 at a CPU-sized batch of 8.
"""
import argparse
import os
import time

import jax
import numpy as np

import train_throughput
from dqnn import data

REFERENCE = {'cifar100': ('cifar_resnet20', 128), 'imagenet2012': ('resnet18', 8)}


def pipeline_rate(name: str, data_dir: str, batch: int, steps: int) -> float:
  batches = data.train_iterator(name, data_dir, global_batch_size=batch, seed=0)
  for _ in range(3):  # The first batches wait for the shuffle buffer.
    next(batches)
  start = time.perf_counter()
  for _ in range(steps):
    next(batches)
  return steps * batch / (time.perf_counter() - start)


def fed_rate(name: str, data_dir: str, model: str, batch: int, steps: int) -> tuple[float, float]:
  """(img/s of the step alone, img/s of the step fed by the pipeline)."""
  _, run, step_on = train_throughput.make_step(model, 2, batch, with_batch_input=True)
  run()
  alone = [run() for _ in range(steps)]
  batches = data.train_iterator(name, data_dir, global_batch_size=batch, seed=0)
  step_on(next(batches))
  start = time.perf_counter()
  for _ in range(steps):
    step_on(next(batches))
  fed_seconds = time.perf_counter() - start
  return batch / float(np.median(alone)), steps * batch / fed_seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data_dir', default=os.environ.get('TFDS_DATA_DIR', ''))
  parser.add_argument('--datasets', default='cifar100,imagenet2012')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--quick', action='store_true', help='CIFAR only, tiny model, 2 steps')
  args = parser.parse_args()
  names = [n for n in args.datasets.split(',') if n]
  if args.quick:
    REFERENCE['cifar100'] = ('_cifar_resnet_tiny', 16)
    names, args.steps = ['cifar100'], 2
  print(f'{jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} CPU '
        f'core(s); {args.steps} steps each')
  print('| dataset | model | batch | pipeline alone img/s | step alone img/s | step fed by '
        'pipeline img/s | pipeline / step | fed / alone |')
  print('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
  for name in names:
    model, batch = REFERENCE[name]
    supply = pipeline_rate(name, args.data_dir or None, batch, 2 * args.steps)
    alone, fed = fed_rate(name, args.data_dir or None, model, batch, args.steps)
    print(f'| {name} | {model} | {batch} | {supply:.1f} | {alone:.1f} | {fed:.1f} | '
          f'{supply / alone:.1f}x | {fed / alone:.2f} |')


if __name__ == '__main__':
  main()
