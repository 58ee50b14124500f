"""Cost of one train step: float vs DQ / LQ-Nets / LSQ W2A2, by XLA's cost analysis and by the clock.

    python benchmarks/step_cost.py [--model=resnet18] [--batch=256] [--dtype=bfloat16]
        [--variants=float,dq,lqnets,lsq] [--teachers=MODEL,...] [--breakdown]
        [--time | --no-time] [--json]

The step is `dqnn.train.train_step` itself (forward, backward, `create_optimizer` incl. the DQ
direct update, BatchNorm/quantizer state), built as benchmarks/train_throughput.py builds it, on
synthetic data. For every variant it prints XLA's `compile().cost_analysis()` of the compiled step
("bytes accessed" and flops, and their ratios to float). No step is run for that: the state is
only traced (`jax.eval_shape`), so the proxy is cheap on a CPU at the full batch. The bytes are
counted on the backend's own fused HLO, so a CPU number is a proxy for an accelerator's memory
traffic, not a measurement of it.

With `--time` (the default on an accelerator, off on a CPU) the state is built for real and the
steps are timed: `--rounds` rounds of `--steps` steps of every variant, round-robin, median of the
per-round step time; ratios to float.

`--teachers=cifar_resnet20,cifar_resnet56` adds, for each named model, the `--distill_variant`
step distilled from a float teacher of that model (`config.distill`: the teacher's forward in
eval mode inside the step, its variables an argument of the step), and prints what the teacher
adds: flops, bytes and (timed) step time relative to the same step without a teacher.

`--breakdown` compiles each quantizer alone at the model's tensor shapes (every quantized layer's
input activation and kernel, recorded while tracing the model) and prints the bytes it accesses,
summed over the layers: activation quantizer forward + backward (+ its statistics refit), weight
quantizer forward + backward, and the optimizer update of the whole parameter tree. Those are the
pieces a quantized step has on top of (or instead of) the float one.
"""
import argparse
import functools
import json
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import base
from dqnn import data as dqnn_data
from dqnn import run_builder
from dqnn import runs
from dqnn import train
from dqnn.data import train_input
from dqnn.layers import QuantConv, QuantDense
from dqnn.models import MODELS
from dqnn.quantizers import FULL_PRECISION, activation_quantizer, weight_quantizer

VARIANTS = {
    'float': dict(w_bits=FULL_PRECISION, a_bits=FULL_PRECISION),
    'dq': dict(w_bits=2, a_bits=2, weight_quantizer='dq', act_quantizer='dq'),
    'lqnets': dict(w_bits=2, a_bits=2, weight_quantizer='lqnets', act_quantizer='lqnets'),
    'lsq': dict(w_bits=2, a_bits=2, weight_quantizer='lsq', act_quantizer='lsq'),
    # DQ's two halves alone, to split its cost between weights and activations.
    'dq_weights': dict(w_bits=2, a_bits=FULL_PRECISION, weight_quantizer='dq'),
    'dq_acts': dict(w_bits=FULL_PRECISION, a_bits=2, act_quantizer='dq'),
}
LABELS = {'float': 'float', 'dq': 'DQ W2A2', 'lqnets': 'LQ-Nets W2A2', 'lsq': 'LSQ W2A2',
          'dq_weights': 'DQ W2 (float activations)', 'dq_acts': 'DQ A2 (float weights)'}
DEFAULT_VARIANTS = ('float', 'dq', 'lqnets', 'lsq')


def _config(model_name: str, variant: str, dtype: str, act_options: dict):
  config = base.get_base_config()
  config.model = model_name
  config.dtype = dtype
  config.quant.update(VARIANTS[variant])
  if variant in ('dq', 'dq_acts') and act_options:
    config.quant.act_options = dict(act_options)
  return config


def _cost(compiled) -> dict:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older jax: one dict per computation.
    analysis = analysis[0]
  return {'bytes': float(analysis.get('bytes accessed', float('nan'))),
          'flops': float(analysis.get('flops', float('nan')))}


def _num_classes(model_name: str) -> int:
  """CIFAR-100 models at 32x32, ImageNet models at 224x224."""
  return 100 if MODELS[model_name].image_size <= 64 else 1000


class Step:
  """One variant's jitted train step, its shapes, and (on demand) a real state to time.

  With `teacher` (a model name) the step distils from a float teacher of that model.
  """

  def __init__(self, model_name, variant, batch, dtype, act_options, teacher=None):
    config = _config(model_name, variant, dtype, act_options)
    self.size = MODELS[model_name].image_size
    self.num_classes = _num_classes(model_name)
    self.model = runs.model_from_config(config, classes=self.num_classes)
    self.tx = run_builder.create_optimizer(config, optax.constant_schedule(0.01))
    self.images = jax.ShapeDtypeStruct((batch, self.size, self.size, 3), jnp.float32)
    self.init = jax.jit(functools.partial(train.initial_state, self.model, self.tx))
    self.state_shape = jax.eval_shape(self.init, jax.random.key(1), self.images)
    # The step reads uint8 batches, as from the input pipelines, and standardises them itself.
    self.data_shape = {'image': jax.ShapeDtypeStruct(self.images.shape, jnp.uint8),
                       'label': jax.ShapeDtypeStruct((batch,), jnp.int32)}
    self.teacher_model = teacher and runs.model_from_config(
        _config(teacher, 'float', dtype, {}), classes=self.num_classes)
    self.teacher_init = teacher and jax.jit(
        functools.partial(self.teacher_model.init, train=False))
    self.teacher_shape = teacher and jax.eval_shape(self.teacher_init, jax.random.key(3),
                                                    self.images)
    self.step = jax.jit(
        functools.partial(train.train_step, model=self.model, tx=self.tx,
                          make_batch=train_input.HostInput.make_batch,
                          input_statistics='imagenet2012', label_smoothing=0.0,
                          teacher_model=self.teacher_model,
                          temperature=1.0, distill_weight=1.0),
        donate_argnums=0)
    start = time.perf_counter()
    self.compiled = self.step.lower(self.state_shape, self.data_shape,
                                    self.teacher_shape).compile()
    self.compile_seconds = time.perf_counter() - start
    self.cost = _cost(self.compiled)

  def timer(self):
    """A function running `steps` steps and returning the seconds per step."""
    batch = self.images.shape[0]
    images = jax.random.randint(jax.random.key(0), self.images.shape, 0, 256).astype(jnp.uint8)
    data = {'image': images, 'label': jnp.arange(batch, dtype=jnp.int32) % self.num_classes}
    standardized = dqnn_data.standardize(images, 'imagenet2012')
    carry = [self.init(jax.random.key(1), standardized)]
    teacher_variables = self.teacher_model and self.teacher_init(jax.random.key(3), standardized)

    def run(steps):
      start = time.perf_counter()
      for _ in range(steps):
        carry[0], step_metrics, finite = self.compiled(carry[0], data, teacher_variables)
      jax.block_until_ready((carry[0], step_metrics, finite))
      return (time.perf_counter() - start) / steps

    return run


def time_steps(steps_by_variant: dict, rounds: int, steps: int, warmup: int) -> dict:
  """Median seconds per step of every variant, timed round-robin."""
  timers = {name: step.timer() for name, step in steps_by_variant.items()}
  for timer in timers.values():
    if warmup:
      timer(warmup)
  samples = {name: [] for name in timers}
  names = list(timers)
  for round_index in range(rounds):
    shift = round_index % len(names)
    for name in names[shift:] + names[:shift]:
      samples[name].append(timers[name](steps))
  return {name: statistics.median(values) for name, values in samples.items()}


# --- Per-module breakdown -------------------------------------------------------------------

def quantized_layer_shapes(model_name: str, dtype: str, images) -> list[dict]:
  """Every quantized layer's path, input activation shape/dtype and kernel shape at W2A2."""
  model = runs.model_from_config(_config(model_name, 'dq', dtype, {}),
                                 classes=_num_classes(model_name))
  layers = []

  def record(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name == '__call__' and isinstance(module, (QuantConv, QuantDense))
        and module.a_bits != FULL_PRECISION and module.w_bits != FULL_PRECISION):
      inputs = args[0]
      if isinstance(module, QuantConv):
        kernel = (*module.kernel_size, inputs.shape[-1] // module.feature_group_count,
                  module.features)
      else:
        kernel = (inputs.shape[-1], module.features)
      layers.append({'path': '/'.join(module.path), 'act_shape': inputs.shape,
                     'act_dtype': inputs.dtype, 'kernel': kernel, 'signed': module.a_signed})
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=True), images)
  return layers


def _compiled_bytes(fn, *shapes) -> float:
  return _cost(jax.jit(fn).lower(*shapes).compile())['bytes']


def activation_bytes(method: str, layer: dict, options) -> float:
  """Forward + backward (+ statistics update) of one activation quantizer, alone."""
  module = activation_quantizer(method, 2, options, signed=layer['signed'])
  x = jax.ShapeDtypeStruct(layer['act_shape'], layer['act_dtype'])
  variables = jax.eval_shape(module.init, jax.random.key(0), x)

  def fwd_bwd(variables, x, g):
    def apply(params, x):
      return module.apply({**variables, 'params': params}, x, mutable=True)
    y, vjp, new_state = jax.vjp(apply, variables.get('params', {}), x, has_aux=True)
    return y, new_state, vjp(g)

  return _compiled_bytes(fwd_bwd, variables, x, x)


def weight_bytes(method: str, layer: dict) -> float:
  """Forward + backward of one weight quantizer (kernel from its parameters), alone."""
  module = weight_quantizer(method, 2, nn.initializers.lecun_normal(), None)
  shape = tuple(layer['kernel'])
  variables = jax.eval_shape(lambda key: module.init(key, shape), jax.random.key(0))
  g = jax.ShapeDtypeStruct(shape, jnp.float32)

  def fwd_bwd(variables, g):
    def apply(params):
      return module.apply({**variables, 'params': params}, shape, mutable=True)
    y, vjp, new_state = jax.vjp(apply, variables['params'], has_aux=True)
    return y, new_state, vjp(g)

  return _compiled_bytes(fwd_bwd, variables, g)


def optimizer_bytes(step: Step) -> float:
  """`tx.update` + `apply_updates` over the whole parameter tree."""
  params = step.state_shape.params
  opt_state = step.state_shape.opt_state

  def update(params, opt_state, grads):
    updates, opt_state = step.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return _compiled_bytes(update, params, opt_state, params)


def breakdown(model_name: str, dtype: str, steps: dict, act_options: dict) -> list[dict]:
  """Bytes of each quantizer module, summed over the model's quantized layers."""
  layers = quantized_layer_shapes(model_name, dtype, steps['float'].images)
  rows = []
  for variant, step in steps.items():
    if variant not in ('dq', 'lqnets', 'lsq'):
      rows.append({'variant': variant, 'module': 'optimizer update', 'bytes': optimizer_bytes(step)})
      continue
    quant = VARIANTS[variant]
    options = act_options if variant == 'dq' else None
    rows.append({'variant': variant, 'module': 'activation quantizers (fwd+bwd+refit)',
                 'bytes': sum(activation_bytes(quant['act_quantizer'], layer, options)
                              for layer in layers)})
    rows.append({'variant': variant, 'module': 'weight quantizers (fwd+bwd)',
                 'bytes': sum(weight_bytes(quant['weight_quantizer'], layer) for layer in layers)})
    rows.append({'variant': variant, 'module': 'optimizer update', 'bytes': optimizer_bytes(step)})
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='resnet18', choices=sorted(MODELS))
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'))
  parser.add_argument('--variants', default=','.join(DEFAULT_VARIANTS),
                      help=f'comma-separated, from {",".join(VARIANTS)}')
  parser.add_argument('--teachers', default='',
                      help='comma-separated models: the --distill_variant step distilled from a '
                      'float teacher of each')
  parser.add_argument('--distill_variant', default='dq', choices=sorted(VARIANTS))
  parser.add_argument('--dq_act_options', default='{}',
                      help='JSON options for DQ\'s activation quantizer, e.g. an approximation')
  parser.add_argument('--breakdown', action='store_true', help='per-module bytes (slower)')
  parser.add_argument('--time', action=argparse.BooleanOptionalAction, default=None,
                      help='time the steps (default: on an accelerator only)')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--json', action='store_true', help='print one JSON object instead')
  args = parser.parse_args()
  variants = [v for v in args.variants.split(',') if v]
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown or 'float' not in variants:
    raise SystemExit(f'--variants must include float and come from {list(VARIANTS)}; '
                     f'got {variants}.')
  if min(args.rounds, args.steps) < 1 or args.warmup < 0:
    raise SystemExit('--rounds and --steps must be >= 1 and --warmup >= 0.')
  act_options = json.loads(args.dq_act_options)
  platform = jax.devices()[0].platform
  timed = args.time if args.time is not None else platform != 'cpu'

  teachers = [t for t in args.teachers.split(',') if t]
  if unknown_teachers := [t for t in teachers if t not in MODELS]:
    raise SystemExit(f'--teachers must be models of dqnn.models; got {unknown_teachers}.')
  if teachers and args.distill_variant not in variants:
    variants.append(args.distill_variant)
  steps = {v: Step(args.model, v, args.batch, args.dtype, act_options) for v in variants}
  distilled = {f'{args.distill_variant}+{t}': Step(args.model, args.distill_variant, args.batch,
                                                   args.dtype, act_options, teacher=t)
               for t in teachers}
  steps.update(distilled)
  seconds = time_steps(steps, args.rounds, args.steps, args.warmup) if timed else {}
  plain = {name: step for name, step in steps.items() if name not in distilled}
  rows = breakdown(args.model, args.dtype, plain, act_options) if args.breakdown else []
  base_cost = steps['float'].cost
  results = []
  for name, step in steps.items():
    label = LABELS[name.split('+')[0]] + (f' + {name.split("+")[1]} teacher' if '+' in name
                                           else '')
    entry = {'variant': label, 'compile_s': step.compile_seconds, **step.cost,
             'bytes_vs_float': step.cost['bytes'] / base_cost['bytes'],
             'flops_vs_float': step.cost['flops'] / base_cost['flops']}
    if timed:
      entry['ms_per_step'] = 1e3 * seconds[name]
      entry['img_per_s'] = args.batch / seconds[name]
      entry['time_vs_float'] = seconds[name] / seconds['float']
    if name in distilled:  # What the teacher adds to the same step without one.
      student = steps[args.distill_variant]
      entry.update(teacher=name.split('+')[1],
                   extra_flops=step.cost['flops'] - student.cost['flops'],
                   extra_bytes=step.cost['bytes'] - student.cost['bytes'],
                   flops_vs_student=step.cost['flops'] / student.cost['flops'],
                   bytes_vs_student=step.cost['bytes'] / student.cost['bytes'])
      if timed:
        entry['time_vs_student'] = seconds[name] / seconds[args.distill_variant]
    results.append(entry)
  header = {'model': args.model, 'batch': args.batch, 'dtype': args.dtype,
            'device': f'{jax.devices()[0].device_kind} x{jax.device_count()}',
            'jax': jax.__version__, 'dq_act_options': act_options}
  if args.json:
    print(json.dumps({**header, 'steps': results, 'breakdown': rows}))
    return
  print(', '.join(f'{k} {v}' for k, v in header.items()))
  print('| variant | GB accessed | vs float | GFLOP | vs float | compile s |'
        + (' ms/step | img/s | vs float |' if timed else ''))
  print('| --- | ---: | ---: | ---: | ---: | ---: |' + (' ---: | ---: | ---: |' if timed else ''))
  for r in results:
    line = (f'| {r["variant"]} | {r["bytes"] / 1e9:.4g} | {r["bytes_vs_float"]:.3f}x | '
            f'{r["flops"] / 1e9:.4g} | {r["flops_vs_float"]:.3f}x | {r["compile_s"]:.0f} |')
    if timed:
      line += f' {r["ms_per_step"]:.1f} | {r["img_per_s"]:.0f} | {r["time_vs_float"]:.2f}x |'
    print(line)
  if distilled:
    print()
    print('| distilled step | extra GFLOP | flops vs no teacher | extra GB accessed | '
          'bytes vs no teacher |' + (' time vs no teacher |' if timed else ''))
    print('| --- | ---: | ---: | ---: | ---: |' + (' ---: |' if timed else ''))
    for r in results:
      if 'teacher' in r:
        line = (f'| {r["variant"]} | {r["extra_flops"] / 1e9:.4g} | {r["flops_vs_student"]:.3f}x '
                f'| {r["extra_bytes"] / 1e9:.4g} | {r["bytes_vs_student"]:.3f}x |')
        print(line + (f' {r["time_vs_student"]:.2f}x |' if timed else ''))
  if not timed:
    print(f'(step times not measured on {platform}; pass --time to measure them)')
  if rows:
    print()
    print('| variant | module (summed over quantized layers) | GB accessed | % of float step |')
    print('| --- | --- | ---: | ---: |')
    for row in rows:
      print(f'| {LABELS[row["variant"]]} | {row["module"]} | {row["bytes"] / 1e9:.4g} | '
            f'{100 * row["bytes"] / base_cost["bytes"]:.1f} |')


if __name__ == '__main__':
  main()
