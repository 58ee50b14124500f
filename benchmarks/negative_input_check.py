"""Cost of the unsigned-input check (`dqnn.layers.NEGATIVE_INPUT_WARNING`) in a train step.

    python benchmarks/negative_input_check.py [--model=cifar_resnet20] [--batch=128] [--steps=10]

One process: the same DQ W2A2 forward+backward step (model_step_time.make_step) compiled with
the check and without it (NEGATIVE_INPUT_WARNING = None, read at trace time), then timed
round-robin, alternating the order, so machine load hits both alike; prints the medians and
their ratio.
"""
import argparse
import statistics

from dqnn import layers
from dqnn.models import QuantPolicy

import model_step_time


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='cifar_resnet20')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=10)
  args = parser.parse_args()
  policy = QuantPolicy(w_bits=2, a_bits=2)
  threshold = layers.NEGATIVE_INPUT_WARNING
  steps = {}
  for name, value in (('with check', threshold), ('without check', None)):
    layers.NEGATIVE_INPUT_WARNING = value
    steps[name] = model_step_time.make_step(args.model, policy, args.batch)
    steps[name]()  # compile (tracing reads the threshold) and warm up
  layers.NEGATIVE_INPUT_WARNING = threshold
  times = {name: [] for name in steps}
  for round_ in range(args.steps):
    # Alternating the order too, so neither variant always runs right after the other.
    for name, run in list(steps.items())[::1 if round_ % 2 else -1]:
      times[name].append(run())
  medians = {name: statistics.median(t) for name, t in times.items()}
  for name, median in medians.items():
    print(f'{name:>14}: {1000 * median:8.1f} ms/step (median of {args.steps})')
  print(f'ratio with/without: {medians["with check"] / medians["without check"]:.3f}')


if __name__ == '__main__':
  main()
