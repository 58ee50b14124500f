r"""Budgeted mixed precision: each layer's weight and activation bits for a trained run.

  python -m dqnn.mixed_precision --workdir=/tmp/dqnn/r20_fp --budget_bops=2.5e9
  python -m dqnn.mixed_precision --workdir=/tmp/dqnn/r20_fp \
      --like=configs/cifar100_resnet20_w2a2.py [--cost=bytes] [--bits=1,2,3,4] \
      [--weight_bits=2,3,4] [--act_bits=...] [--sensitivity=loss|proxy] [--num_batches=2] \
      [--output=<config file>]
  python -m dqnn.main --config=/tmp/dqnn/r20_fp/mixed_precision/config.py --workdir=/tmp/dqnn/r20_mp
  python -m dqnn.report --workdir=/tmp/dqnn/r20_mp

The budget is one of --budget_bops, --budget_bytes (the model's total as `dqnn.report` counts
it: BOPs, or packed bytes with BatchNorm) or --like=<config>[:arg] (that uniform config's total
BOPs, or bytes with --cost=bytes; it must build the run's model).

Layers. Every conv/dense layer that a uniform policy quantizes (a body layer) gets a
`(w_bits, a_bits)` pair from --bits x --bits (--weight_bits / --act_bits replace one side:
the bits the config's quantizers can train, e.g. LSQ's signed weight grid needs >= 2); the first
and last layers follow the run's `first_layer` / `last_layer` policy and keep their bits (float,
or 8-bit), their cost counted in the budget. The result is the run's config with exact-path
`quant.overrides` for every body layer (merged into the run's own overrides, whose other fields
are kept).

Sensitivity of a layer at b bits, for weights and activations separately:
- 'loss' (default): the increase of the mean cross-entropy over --num_batches eval batches when
  only that layer's weights (or only its input activations) are quantized at b bits and every
  other layer keeps the run's own bits (float, for a float run). The weights are quantized from
  the run's float kernels as `dqnn.warm_start` does (DQ levels fitted to the kernel, activation
  quantizers calibrated on the first of the batches). For a quantized run the kernels are its
  `w_q`, and its activation quantizers are calibrated afresh.
  Cost: 2 x layers x bits model builds and evaluations.
- 'proxy': the quantizer's own relative error, `|Q(x) - x|^2 / |x|^2` of the kernel
  (weights) or the layer's mean per-channel relative error of its input (the error DQ sows,
  `quant_metrics`), with every body layer quantized at b bits at once: one build per bit width.
A pair's sensitivity is the weights' plus the activations' (assumed additive).
Why 'loss' is the default, measured on a float tiny ResNet (15% top-1 on a CIFAR-100 subset; command
in docs/mixed_precision.md): over layers x bits 1-4 the proxy's Spearman correlation with the loss
increase is 0.68 (weights) and 0.92 (activations), but it ranks bit widths, not layers: at 1 bit
every kernel's relative error is 0.33-0.36 while the loss increase spans 0.13-4.47.

The allocation minimises the total sensitivity within the budget: `dqnn.bit_allocation`, an
exact multiple-choice knapsack over Pareto frontiers. Costs come from `dqnn.report`.

Written beside --output (default `<workdir>/mixed_precision/config.py`): the config, a
markdown table `<name>.md` (layer, bits chosen, sensitivity, cost) and a plot `<name>.png`.
"""
import dataclasses
import functools
import itertools
import os
import pprint
from typing import Any, Sequence

from absl import app
from absl import flags
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dqnn import bit_allocation
from dqnn import checkpoint
from dqnn import config_flag
from dqnn import data
from dqnn import figures
from dqnn import files
from dqnn import metrics
from dqnn import report
from dqnn import run_config
from dqnn import runs
from dqnn import tracing
from dqnn import run_builder
from dqnn import warm_start
from dqnn.quantizers import FULL_PRECISION, check_bits, readout
from dqnn.variables import (ACT_QUANTIZER, BATCH_STATS, PARAMS, QUANT_METRICS, QUANTIZER,
                            WEIGHT_QUANTIZER, layer_variables, path_name, subtree)

WEIGHTS, ACTIVATIONS = 'weights', 'activations'
SENSITIVITIES = ('loss', 'proxy')
COSTS = ('bops', 'bytes')
OUTPUT = os.path.join('mixed_precision', 'config.py')
# The bits a uniform policy is probed with to tell body layers from the first and last.
_PROBE_BITS = 2


@dataclasses.dataclass(frozen=True)
class Sensitivity:
  """One layer's sensitivity at `bits` for one operand: loss increase and relative error."""
  layer: str
  operand: str  # WEIGHTS | ACTIVATIONS
  bits: int
  loss_increase: float | None  # None when not measured (proxy only).
  relative_error: float


@dataclasses.dataclass(frozen=True)
class LayerChoice:
  """A body layer's chosen bits, with the sensitivity and cost of that choice."""
  layer: str
  w_bits: int
  a_bits: int
  w_sensitivity: float
  a_sensitivity: float
  cost: int


@dataclasses.dataclass(frozen=True)
class Result:
  choices: list[LayerChoice]
  budget: int
  cost_kind: str  # COSTS
  fixed_cost: int  # The first and last layers (and BatchNorm, for bytes): not allocated.
  sensitivity: str

  @property
  def total_cost(self) -> int:
    return self.fixed_cost + sum(choice.cost for choice in self.choices)


def _with_overrides(config: ml_collections.ConfigDict,
                    overrides: dict[str, dict[str, Any]], **quant) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  config.quant.update(quant)
  config.quant.overrides = overrides
  return config


def body_layers(config: ml_collections.ConfigDict) -> list[str]:
  """The conv/dense paths a uniform policy quantizes: all but those the edge policy sets."""
  uniform = _with_overrides(config, {}, w_bits=_PROBE_BITS, a_bits=_PROBE_BITS)
  return [row.name for row in report.config_costs(uniform)[:-1]
          if (row.w_bits, row.a_bits) == (_PROBE_BITS, _PROBE_BITS)]


def allocation_overrides(config: ml_collections.ConfigDict,
                         bits: dict[str, tuple[int, int]]) -> dict[str, dict[str, Any]]:
  """The run's overrides with `{layer: (w_bits, a_bits)}` set as exact-path overrides."""
  overrides = config.quant.get('overrides', ml_collections.ConfigDict()).to_dict()
  for layer, (w_bits, a_bits) in bits.items():
    overrides[layer] = {**overrides.get(layer, {}), 'w_bits': w_bits, 'a_bits': a_bits}
  return overrides


def _cost(row: report.LayerCost, kind: str) -> int:
  return row.bops if kind == 'bops' else row.packed_bytes


def total_cost(config: ml_collections.ConfigDict, kind: str) -> int:
  """The model's total cost as `dqnn.report` counts it."""
  return _cost(report.total(report.config_costs(config)), kind)


def choice_costs(config: ml_collections.ConfigDict, layers: Sequence[str],
                 weight_bits: Sequence[int], act_bits: Sequence[int],
                 kind: str) -> tuple[dict[tuple[int, int], dict[str, int]], int]:
  """`({(w_bits, a_bits): {layer: cost}}, fixed cost of every other row)`, from `dqnn.report`,
  for every pair of candidate weight and activation bits."""
  costs, fixed = {}, None
  for pair in itertools.product(weight_bits, act_bits):
    rows = report.config_costs(_with_overrides(
        config, allocation_overrides(config, {layer: pair for layer in layers})))
    costs[pair] = {row.name: _cost(row, kind) for row in rows if row.name in layers}
    fixed = sum(_cost(row, kind) for row in rows if row.name not in layers)
  return costs, fixed


def _float_source(model, variables: dict[str, Any], input_shape) -> dict[str, Any]:
  """The run's weights as a float model's: each quantized kernel replaced by its `w_q`, every
  quantizer's variables left out (they are fitted again for the bits being measured)."""
  params = flax.core.unfreeze(jax.device_get(variables[PARAMS]))
  for module, _ in tracing.quantized_layers(model, input_shape, variables):
    if module.w_bits != FULL_PRECISION:
      layer = subtree(params, module.path)
      layer['kernel'] = readout.quantized_kernel(
          module, layer_variables(variables, (*module.path, WEIGHT_QUANTIZER)))

  def without_quantizers(tree):
    if not isinstance(tree, dict):
      return tree
    return {key: without_quantizers(value) for key, value in tree.items()
            if key not in (WEIGHT_QUANTIZER, ACT_QUANTIZER, QUANTIZER)}

  return {PARAMS: without_quantizers(params), BATCH_STATS: variables.get(BATCH_STATS, {})}


@dataclasses.dataclass(frozen=True)
class _Evaluation:
  loss: float
  weight_errors: dict[str, float]
  act_errors: dict[str, float]


def _masked_loss_and_errors(model, variables, images, labels, mask):
  logits, sown = model.apply(variables, images, train=False, mutable=[QUANT_METRICS])
  mask = mask.astype(jnp.float32)
  loss = (metrics.cross_entropy(logits, labels) * mask).sum() / mask.sum()
  return loss, metrics.layer_errors(sown.get(QUANT_METRICS, {}))


class Probe:
  """Evaluates the run's model, with extra per-layer bits, on a few fixed eval batches."""

  def __init__(self, config: ml_collections.ConfigDict, variables: dict[str, Any],
               num_batches: int):
    self.config = config
    info = run_builder.dataset_info(config)
    if not info.num_eval:
      raise ValueError(f"Dataset {config.dataset!r} has no eval split to measure on; use "
                       '--sensitivity=proxy or a run on a real dataset.')
    size = runs.image_size(config)
    self.input_shape = (size, size, 3)
    input_statistics = data.input_statistics(info.name)
    batches = itertools.islice(
        data.eval_batches(info, config.data_dir or None, global_batch_size=config.eval_batch_size,
                          image_size=size), num_batches)
    self.batches = [(data.standardize(batch['image'], input_statistics), jnp.asarray(batch['label']),
                     jnp.asarray(batch['mask'])) for batch in batches]
    self.source = _float_source(runs.model_from_config(config), variables, self.input_shape)
    self.rng = jax.random.key(config.seed)

  def evaluate(self, overrides: dict[str, dict[str, Any]]) -> _Evaluation:
    """Loss and per-layer relative errors with the run's config under `overrides`."""
    model = runs.model_from_config(_with_overrides(self.config, overrides))
    images = self.batches[0][0]
    # Only shapes are needed: every value is fitted to the run's weights or calibrated anew,
    # and initialising for real would run each quantizer's k-means for nothing.
    shapes = jax.eval_shape(functools.partial(model.init, train=True),
                            self.rng, images)
    variables = warm_start.from_float(
        model, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes), self.source, images,
        self.rng)
    step = jax.jit(functools.partial(_masked_loss_and_errors, model))
    losses, errors = [], []
    for batch in self.batches:
      loss, sown = step(variables, *batch)
      losses.append(float(loss))
      errors.append(sown)
    act_errors = {name.removeprefix('act_error/'): float(np.mean([e[name] for e in errors]))
                  for name in errors[0]}
    return _Evaluation(float(np.mean(losses)), self._weight_errors(model, variables), act_errors)

  def _weight_errors(self, model, variables) -> dict[str, float]:
    errors = {}
    for module, _ in tracing.quantized_layers(model, self.input_shape, variables):
      if module.w_bits != FULL_PRECISION:
        w_q = readout.quantized_kernel(
            module, layer_variables(variables, (*module.path, WEIGHT_QUANTIZER)))
        kernel = np.asarray(subtree(self.source[PARAMS], module.path)['kernel'])
        errors[path_name(module.path)] = float(np.sum((w_q - kernel) ** 2) / np.sum(kernel ** 2))
    return errors


def measure(probe: Probe, layers: Sequence[str], weight_bits: Sequence[int],
            act_bits: Sequence[int], mode: str) -> list[Sensitivity]:
  """Each layer's sensitivity at each candidate bit width of its weights and of its input
  activations (module docstring)."""
  if mode not in SENSITIVITIES:
    raise ValueError(f'sensitivity must be one of {", ".join(SENSITIVITIES)}; got {mode!r}.')
  own = {row.name: (row.w_bits, row.a_bits) for row in report.config_costs(probe.config)}
  base_overrides = allocation_overrides(probe.config, {layer: own[layer] for layer in layers})
  results = []
  if mode == 'proxy':
    for b in sorted({*weight_bits, *act_bits}):
      evaluation = probe.evaluate(allocation_overrides(probe.config,
                                                       {layer: (b, b) for layer in layers}))
      for layer in layers:
        if b in weight_bits:
          results.append(Sensitivity(layer, WEIGHTS, b, None,
                                     evaluation.weight_errors.get(layer, 0.0)))
        if b in act_bits:
          results.append(Sensitivity(layer, ACTIVATIONS, b, None,
                                     evaluation.act_errors.get(layer, 0.0)))
    return results
  base = probe.evaluate(base_overrides)
  for layer in layers:
    for operand, index, bits in ((WEIGHTS, 0, weight_bits), (ACTIVATIONS, 1, act_bits)):
      for b in bits:
        pair = list(own[layer])
        pair[index] = b
        evaluation = (base if tuple(pair) == own[layer] else
                      probe.evaluate({**base_overrides, **allocation_overrides(
                          probe.config, {layer: tuple(pair)})}))
        errors = evaluation.weight_errors if operand == WEIGHTS else evaluation.act_errors
        results.append(Sensitivity(layer, operand, b, evaluation.loss - base.loss,
                                   errors.get(layer, 0.0)))
  return results


def check_budget(costs: dict[tuple[int, int], dict[str, int]], fixed_cost: int, budget: int,
                 cost_kind: str) -> None:
  """Raises `InfeasibleBudgetError`, naming the least achievable cost, if nothing fits."""
  layers = next(iter(costs.values()))
  least = fixed_cost + sum(min(cost[layer] for cost in costs.values()) for layer in layers)
  if least > budget:
    raise bit_allocation.InfeasibleBudgetError(
        f'No allocation fits the budget of {budget:,} {cost_kind}: the least achievable, every '
        f'body layer at its cheapest bits, is {least:,} (of which {fixed_cost:,} for the first '
        f'and last layers{" and BatchNorm" if cost_kind == "bytes" else ""}). Raise the budget '
        'or add lower --bits.')


def solve(sensitivities: Sequence[Sensitivity], costs: dict[tuple[int, int], dict[str, int]],
          fixed_cost: int, budget: int, cost_kind: str, mode: str) -> Result:
  """The least-sensitivity `(w_bits, a_bits)` per layer with total cost <= `budget`."""
  value = {(s.layer, s.operand, s.bits): s.loss_increase if mode == 'loss' else s.relative_error
           for s in sensitivities}
  layers = list(dict.fromkeys(s.layer for s in sensitivities))
  choices = [[bit_allocation.Choice((w, a), cost[layer],
                                    value[layer, WEIGHTS, w] + value[layer, ACTIVATIONS, a])
              for (w, a), cost in costs.items()] for layer in layers]
  check_budget(costs, fixed_cost, budget, cost_kind)
  allocation = bit_allocation.allocate(choices, budget - fixed_cost)
  chosen = []
  for layer, layer_choices, index in zip(layers, choices, allocation.indices):
    (w, a), cost = layer_choices[index].option, layer_choices[index].cost
    chosen.append(LayerChoice(layer, w, a, value[layer, WEIGHTS, w],
                              value[layer, ACTIVATIONS, a], cost))
  return Result(chosen, budget, cost_kind, fixed_cost, mode)


def config_text(workdir: str, result: Result, num_batches: int, path: str) -> str:
  """A config file: the run's config.json with the allocation as `quant.overrides`."""
  bits = {choice.layer: (choice.w_bits, choice.a_bits) for choice in result.choices}
  overrides = allocation_overrides(
      ml_collections.ConfigDict(run_config.read(workdir)), bits)
  return f'''r"""Mixed precision for the run in {workdir}, from dqnn.mixed_precision.

Per-layer bits of {len(bits)} body layers chosen for least {result.sensitivity} sensitivity
({num_batches} eval batches) within {result.budget:,} {result.cost_kind} (this config:
{result.total_cost:,}). The first and last layers follow the run's first_layer / last_layer.

  python -m dqnn.main --config={path} --workdir=<new workdir>

It trains with the run's recipe; add --config.init_from={workdir} to start from its weights.
"""
import ml_collections

from dqnn import run_config

RUN = {os.path.abspath(workdir)!r}
OVERRIDES = {pprint.pformat(overrides, indent=4, width=96)}


def get_config(arg=None):
  if arg:
    raise ValueError(f'{{__file__}} takes no config argument; got {{arg!r}}.')
  saved = run_config.read(RUN)
  if saved is None:
    raise FileNotFoundError(f'{{RUN}} has no {{run_config.CONFIG_FILE}}: this config reads the '
                            'run it was computed from; restore the run or recompute.')
  config = ml_collections.ConfigDict(saved)
  config.quant.overrides = OVERRIDES
  return config
'''


def as_table(result: Result) -> str:
  """Markdown: one row per body layer, then the totals against the budget."""
  unit = result.cost_kind
  lines = [f'| layer | W | A | sensitivity W | sensitivity A | {unit} |',
           '|---|---:|---:|---:|---:|---:|']
  lines += [f'| {c.layer} | {c.w_bits} | {c.a_bits} | {c.w_sensitivity:.4g} | '
            f'{c.a_sensitivity:.4g} | {c.cost:,} |' for c in result.choices]
  total = sum(c.w_sensitivity + c.a_sensitivity for c in result.choices)
  lines += [f'| first / last layers{" + BatchNorm" if unit == "bytes" else ""} | | | | | '
            f'{result.fixed_cost:,} |',
            f'| **total** | | | {total:.4g} (W + A) | | **{result.total_cost:,}** |',
            '', f'Budget: {result.budget:,} {unit}; sensitivity: {result.sensitivity}.']
  return '\n'.join(lines) + '\n'


def plot(result: Result, sensitivities: Sequence[Sensitivity], path: str) -> None:
  """Bits chosen per layer (top) and each layer's sensitivity against bits (bottom)."""
  plt = figures.pyplot()
  layers = [c.layer for c in result.choices]
  x = np.arange(len(layers))
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 0.5 * len(layers) + 2), 7))
  top.bar(x - 0.2, [c.w_bits for c in result.choices], 0.4, label='W bits')
  top.bar(x + 0.2, [c.a_bits for c in result.choices], 0.4, label='A bits')
  top.set_xticks(x, layers, rotation=60, ha='right', fontsize=7)
  top.set_ylabel('bits')
  top.set_title(f'{result.total_cost:,} of {result.budget:,} {result.cost_kind}')
  top.legend()
  key = 'loss_increase' if result.sensitivity == 'loss' else 'relative_error'
  for operand, style in ((WEIGHTS, '-'), (ACTIVATIONS, '--')):
    for i, layer in enumerate(layers):
      points = sorted((s.bits, getattr(s, key)) for s in sensitivities
                      if s.layer == layer and s.operand == operand)
      bottom.plot(*zip(*points), style, color=f'C{i % 10}',
                  label=layer if operand == WEIGHTS else None)
  bottom.set_xlabel('bits (solid: weights, dashed: activations)')
  bottom.set_ylabel('loss increase' if result.sensitivity == 'loss' else 'relative error')
  bottom.legend(fontsize=6, ncol=3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def budget_from(config: ml_collections.ConfigDict, *, budget_bops: float | None,
                budget_bytes: float | None, like: str | None, cost: str) -> tuple[int, str]:
  """(budget, cost kind) from exactly one of the three budget flags."""
  given = [name for name, value in (('--budget_bops', budget_bops),
                                    ('--budget_bytes', budget_bytes), ('--like', like))
           if value is not None]
  if len(given) != 1:
    raise app.UsageError('Give exactly one of --budget_bops, --budget_bytes, --like; got '
                         f'{", ".join(given) or "none"}.')
  if budget_bops is not None:
    return int(budget_bops), 'bops'
  if budget_bytes is not None:
    return int(budget_bytes), 'bytes'
  if cost not in COSTS:
    raise app.UsageError(f'--cost must be one of {", ".join(COSTS)}; got {cost!r}.')
  uniform = config_flag.load(like)
  theirs, ours = report.config_costs(uniform), report.config_costs(config)
  if [row.name for row in theirs] != [row.name for row in ours]:
    raise app.UsageError(
        f'--like={like} builds model {uniform.model!r}, the run {config.model!r} (other layers): '
        'give a config of the run\'s model (for a :runlocal run, the config with :runlocal).')
  return _cost(report.total(theirs), cost), cost


def candidate_bits(values: Sequence[str], flag: str = 'bits') -> list[int]:
  """A bits flag's values as distinct supported bit widths; `app.UsageError` names a bad one."""
  try:
    return sorted({check_bits(int(value) if value.isdigit() else value, f'--{flag}')
                   for value in values})
  except ValueError as error:
    raise app.UsageError(str(error)) from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  options = flags.FLAGS
  try:
    # --weight_bits / --act_bits where given, else --bits.
    weight_bits, act_bits = (candidate_bits(options[flag].value, flag) for flag in (
        'weight_bits' if options.weight_bits else 'bits',
        'act_bits' if options.act_bits else 'bits'))
    config, variables = runs.read_workdir(options.workdir)
    budget, kind = budget_from(config, budget_bops=options.budget_bops,
                               budget_bytes=options.budget_bytes, like=options.like,
                               cost=options.cost)
    layers = body_layers(config)
    costs, fixed = choice_costs(config, layers, weight_bits, act_bits, kind)
    check_budget(costs, fixed, budget, kind)  # Before the measurement, the slow part.
    sensitivities = measure(Probe(config, variables, options.num_batches), layers,
                            weight_bits, act_bits, options.sensitivity)
    result = solve(sensitivities, costs, fixed, budget, kind, options.sensitivity)
  except (FileNotFoundError, checkpoint.CorruptCheckpointError, run_config.ConfigError,
          config_flag.ConfigFlagError, data.DatasetNotFoundError,
          bit_allocation.InfeasibleBudgetError) as error:
    raise SystemExit(f'ERROR: {error}') from None
  output = options.output or os.path.join(options.workdir, OUTPUT)
  stem = os.path.splitext(output)[0]
  os.makedirs(os.path.dirname(output) or '.', exist_ok=True)
  files.atomic_write_text(output, config_text(options.workdir, result, options.num_batches, output))
  table = as_table(result)
  files.atomic_write_text(stem + '.md', table)
  plot(result, sensitivities, stem + '.png')
  # The written file itself, loaded as dqnn.main loads it, is what must meet the budget.
  written = total_cost(config_flag.load(output), kind)
  print(table)
  print(f'{output}: dqnn.report total {written:,} {kind} <= budget {budget:,}'
        if written <= budget else f'ERROR: {output} costs {written:,} > {budget:,} {kind}')
  print(f'Also {stem}.md and {stem}.png.')


def _define_flags():
  # Defined only when run as a program, so importing the module adds no global flags.
  flags.DEFINE_string('workdir', None, 'A training run (float or quantized).', required=True)
  flags.DEFINE_float('budget_bops', None, 'Total BOPs per image the model may cost.')
  flags.DEFINE_float('budget_bytes', None, 'Total packed bytes the model may take.')
  flags.DEFINE_string('like', None, 'A config file[:arg] whose total cost is the budget.')
  flags.DEFINE_enum('cost', 'bops', COSTS, 'What --like matches: BOPs or bytes.')
  flags.DEFINE_list('bits', ['1', '2', '3', '4'], 'Candidate bit widths, weights and '
                    'activations alike (32: float).')
  flags.DEFINE_list('weight_bits', None, 'Candidate weight bits instead of --bits (e.g. 2,3,4 '
                    "for LSQ, whose signed weight grid needs >= 2 bits).")
  flags.DEFINE_list('act_bits', None, 'Candidate activation bits instead of --bits.')
  flags.DEFINE_enum('sensitivity', 'loss', SENSITIVITIES, 'Measured loss increase or the '
                    'quantizers\' relative error (module docstring).')
  flags.DEFINE_integer('num_batches', 2, 'Eval batches the sensitivity is measured on.')
  flags.DEFINE_string('output', None, f'Config file to write (default <workdir>/{OUTPUT}); '
                      'the table (.md) and plot (.png) go beside it.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
