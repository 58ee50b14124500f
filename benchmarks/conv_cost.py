"""Where a ResNet-20 train step's time goes on this CPU: its 3x3 convolutions, pass by pass.

    python benchmarks/conv_cost.py [--batch=128] [--steps=5]

For one 3x3 'SAME' convolution of each ResNet-20 stage (32x32x16, 16x16x32, 8x8x64; NHWC/HWIO,
float32, as the model runs), times the forward pass, the input gradient and the kernel gradient
(each its own jitted program, median of `steps`), then sums them over the network's 19 convs and
prints that next to the whole float train step (train_throughput.make_step). The rest of the step
(BatchNorm, ReLU, optimizer, quantizers) is the difference.
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import train_throughput

DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')
# (spatial size, channels, number of ResNet-20 convs counted at this shape): the stem (3 input
# channels) and the strided first conv of stages 2 and 3 (half the input channels) are counted as
# full-width convs of their output shape, so the sum is a slight overestimate.
STAGES = ((32, 16, 7), (16, 32, 6), (8, 64, 6))


def _median_ms(fn, *args, steps):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=5)
  args = parser.parse_args()
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                                   dimension_numbers=DIMENSIONS)
  passes = {'forward': jax.jit(conv),
            'input grad': jax.jit(jax.grad(lambda x, w: conv(x, w).sum(), 0)),
            'kernel grad': jax.jit(jax.grad(lambda x, w: conv(x, w).sum(), 1))}
  print(f'{jax.device_count()} {jax.devices()[0].platform} device(s), batch {args.batch}, '
        f'median of {args.steps}')
  print('| conv (HxWxC) | count | forward ms | input grad ms | kernel grad ms | GFLOP/s fwd |')
  print('| --- | ---: | ---: | ---: | ---: | ---: |')
  total = 0.0
  for size, channels, count in STAGES:
    x = jnp.ones((args.batch, size, size, channels))
    w = jnp.full((3, 3, channels, channels), 0.01)
    ms = {name: _median_ms(fn, x, w, steps=args.steps) for name, fn in passes.items()}
    total += count * sum(ms.values())
    flops = 2 * args.batch * size * size * 9 * channels * channels
    print(f'| {size}x{size}x{channels} | {count} | {ms["forward"]:.1f} | {ms["input grad"]:.1f} '
          f'| {ms["kernel grad"]:.1f} | {flops / ms["forward"] / 1e6:.1f} |')
  _, run = train_throughput.make_step('cifar_resnet20', 32, args.batch)
  run()
  step = statistics.median(run() for _ in range(args.steps)) * 1000
  print(f'\n19 convs, all passes: {total:.0f} ms; whole float train step: {step:.0f} ms '
        f'({total / step:.0%} in the convs)')


if __name__ == '__main__':
  main()
