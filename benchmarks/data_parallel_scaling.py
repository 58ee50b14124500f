"""Data-parallel scaling on virtual CPU devices: one train step's throughput on 1, 2 and 4 devices.

    python benchmarks/data_parallel_scaling.py [--devices=1,2,4] [--model=cifar_resnet20]
        [--batch=128] [--rounds=2] [--quick]

Each device count runs in its own process (XLA_FLAGS=--xla_force_host_platform_device_count=N
must be set before JAX starts) through train_throughput.py, with the same global batch, so
the N devices split it N ways exactly as `dqnn.train` does: state replicated, batch sharded,
gradients all-reduced. Counts are run in turn, `rounds` times, and the median kept. On a CPU
the devices share the same cores, so this measures how XLA uses the cores, not added hardware.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(devices: int, args) -> list[dict]:
  flags = os.environ.get('XLA_FLAGS', '')
  env = {**os.environ,
         'XLA_FLAGS': f'{flags} --xla_force_host_platform_device_count={devices}'.strip()}
  command = [sys.executable, str(HERE / 'train_throughput.py'), '--json',
             f'--models={args.model}', f'--cifar_batch={args.batch}',
             f'--imagenet_batch={args.batch}', f'--steps={args.steps}']
  output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
  return json.loads(output.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--devices', default='1,2,4')
  parser.add_argument('--model', default='cifar_resnet20')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--quick', action='store_true', help='tiny model, batch 8, 1 round')
  args = parser.parse_args()
  if args.quick:
    args.model, args.batch, args.steps, args.rounds = '_cifar_resnet_tiny', 8, 2, 1
  counts = [int(n) for n in args.devices.split(',')]
  times = {(n, policy): [] for n in counts for policy in ('FP', 'DQ W2A2')}
  for _ in range(args.rounds):
    for n in counts:
      for result in run(n, args):
        times[n, result['policy']].append(result['ms_per_step'])
  print(f'{args.model}, global batch {args.batch}, median over {args.rounds} round(s) of the '
        f'median of {args.steps} steps')
  print('| devices | policy | ms/step | img/s | vs 1 device |')
  print('| ---: | --- | ---: | ---: | ---: |')
  for (n, policy), values in times.items():
    ms = statistics.median(values)
    one = statistics.median(times[counts[0], policy])
    print(f'| {n} | {policy} | {ms:.1f} | {1000 * args.batch / ms:.1f} | {one / ms:.2f}x |')


if __name__ == '__main__':
  main()
