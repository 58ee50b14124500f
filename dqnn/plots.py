r"""Diagnostic plots of a run, written under `<workdir>/plots/` (PNG by default, or PDF/SVG).

  python -m dqnn.plots --workdir=/tmp/dqnn/r20_w2a2 [--compare=/tmp/dqnn/r20_fp ...]
      [--format=png|pdf|svg] [--dpi=150] [--width_in=W] [--height_in=H]

`--width_in`/`--height_in` set every figure's size in inches (one of them alone keeps each
figure's aspect ratio); a PNG is that size times `--dpi` in pixels.

- `weights/<layer>.png`: per quantized layer, a histogram of the weights (`w_q` for DQ, the
  latent kernel for LQ-Nets/LSQ/DoReFa) and beneath it the learned levels: one row of dots per
  output channel up to 16 level tables, above that each level's spread over the channels.
- `act_error/<layer>.png`: per quantized activation, the per-channel relative quantization
  error `mean (x_c - Q(x_c))^2 / mean x_c^2` with levels fitted in closed form on one batch
  under DQ's channel weighting and under pooled weighting (LQ-Nets), channels sorted by energy.
  The batch is the dataset's eval split when it is prepared, else standard-normal fake images;
  the figure title says which.
- `curves.png`: training loss and top-1 in percent (train and eval) from metrics.jsonl, for the
  run and every `--compare` run on one figure.
"""
import dataclasses
import os
from typing import Iterable

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dqnn import data
from dqnn import figures
from dqnn import quantizers
from dqnn import runs
from dqnn import tracing
from dqnn.layers import QuantConv, QuantDense
from dqnn.quantizers import FULL_PRECISION
from dqnn.quantizers import levels as lv
from dqnn.quantizers import readout
from dqnn.quantizers.dq_activation import fit_levels, per_channel_relative_error
from dqnn.variables import ACT_QUANTIZER, layer_variables, path_name

plt = figures.pyplot()

PLOTS_DIR = 'plots'
# Closed-form refits per weighting: each one is a weighted Lloyd step, a few suffice.
_FIT_ITERATIONS = 10


FORMATS = ('png', 'pdf', 'svg')


@dataclasses.dataclass(frozen=True)
class Output:
  """How figures are written: file format, PNG resolution, and a size overriding each figure's
  own (0 = the figure's; one of width/height alone keeps its aspect ratio)."""
  format: str = 'png'
  dpi: int = 150
  width_in: float = 0.
  height_in: float = 0.

  def __post_init__(self):
    if self.format not in FORMATS:
      raise ValueError(f'Unknown plot format {self.format!r}; use one of {", ".join(FORMATS)}.')
    if self.dpi <= 0 or self.width_in < 0 or self.height_in < 0:
      raise ValueError(f'dpi must be positive and width_in/height_in positive or 0 (the '
                       f'figure\'s own size); got dpi={self.dpi}, width_in={self.width_in}, '
                       f'height_in={self.height_in}.')

  def size(self, own: tuple[float, float]) -> tuple[float, float]:
    """The figure size in inches for a figure drawn at `own`."""
    width, height = own
    if self.width_in and self.height_in:
      return self.width_in, self.height_in
    if self.width_in:
      return self.width_in, height * self.width_in / width
    if self.height_in:
      return width * self.height_in / height, self.height_in
    return own


def _file_name(layer: str, output: Output) -> str:
  return f'{layer.replace("/", ".")}.{output.format}'


def _save(fig, path: str, output: Output) -> str:
  """Writes `fig` (drawn with constrained layout, so it lays out again at the new size)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.set_size_inches(output.size(tuple(fig.get_size_inches())))
  fig.savefig(path, dpi=output.dpi, format=output.format)
  plt.close(fig)
  return path


def _quantized_layers(config, variables):
  """`(module, input shape)` of every conv/dense layer with quantized weights or inputs."""
  size = runs.image_size(config)
  return tracing.quantized_layers(runs.model_from_config(config), (size, size, 3), variables)


def plot_weights(config, variables, out_dir: str, output: Output = Output()) -> list[str]:
  """One weight figure per layer with quantized weights; returns the paths."""
  return [_save(figures.weight_figure(module, variables),
                os.path.join(out_dir, 'weights', _file_name(path_name(module.path), output)),
                output)
          for module, _ in _quantized_layers(config, variables)
          if module.w_bits != FULL_PRECISION]


def sample_batch(config, batch_size: int) -> tuple[np.ndarray, str]:
  """Images from the dataset's eval split if it is prepared, else fake ones; and which."""
  size = runs.image_size(config)
  if config.dataset in data.SUPPORTED_DATASETS:
    try:
      info = data.get_dataset_info(config.dataset, config.data_dir or None)
      batch = next(data.eval_batches(info, config.data_dir or None, global_batch_size=batch_size,
                                     image_size=size, process_index=0, process_count=1))
      images = np.asarray(data.standardize(batch['image'][batch['mask']],
                                         data.input_statistics(config.dataset)))
      return images, f'{config.dataset} eval batch'
    except data.DatasetNotFoundError:
      pass
  images = np.random.default_rng(0).standard_normal((batch_size, size, size, 3))
  return images.astype(np.float32), 'fake standard-normal images (dataset not prepared)'


def layer_inputs(config, variables, images) -> dict[str, jax.Array]:
  """The input of every layer with quantized activations, by layer path, on `images`."""
  model = runs.model_from_config(config)

  def capture(variables, images):
    inputs = {}

    def record(module, x, run):
      if module.a_bits != FULL_PRECISION:
        inputs[path_name(module.path)] = x
      return run()

    with tracing.intercept_layers((QuantConv, QuantDense), record):
      model.apply(variables, images, train=False)
    return inputs

  return jax.jit(capture)(variables, images)


def activation_error_figure(module: nn.Module, variables, x: jax.Array, source: str):
  """Per-channel relative error of one layer's input, channel- vs pooled-weighted levels."""
  name = path_name(module.path)
  x = jnp.asarray(x, jnp.float32)
  quantizer = quantizers.activation_quantizer(module.act_quantizer, module.a_bits,
                                              module.act_options, signed=module.a_signed)
  stored = layer_variables(variables, (*module.path, ACT_QUANTIZER))
  # DQ keeps its basis or free parameterisation; uniform grids (DQ's and the baselines') are
  # refit as free levels.
  parameterisation, value = readout.level_parameter(quantizer, stored)
  if parameterisation == 'uniform':
    parameterisation, value = 'free', readout.activation_levels(quantizer, stored)[0]
  energy = np.asarray(jnp.mean(x.reshape(-1, x.shape[-1]) ** 2, axis=0))
  order = np.argsort(energy)
  fig, ax = plt.subplots(figsize=(6, 4), layout='constrained')
  for weighting, label, color in (('channel', 'DQ channel weighting', 'tab:blue'),
                                  ('pooled', 'pooled weighting (LQ-Nets)', 'tab:orange')):
    levels = fit_levels(x, parameterisation, value, module.a_bits, module.a_signed, weighting,
                        _FIT_ITERATIONS)
    error = np.asarray(per_channel_relative_error(x, lv.nearest_value_1d(x, levels)))
    ax.plot(np.arange(error.size), error[order], '.-', color=color,
            label=f'{label} (mean {error.mean():.3g})')
  ax.set_yscale('log')
  ax.set_xlabel('channel (sorted by energy, low to high)')
  ax.set_ylabel('relative quantization error')
  ax.set_title(f'{name}: A{module.a_bits} input, {parameterisation} levels\n{source}',
               fontsize=9)
  ax.legend(fontsize=8)
  return fig


def plot_activation_errors(config, variables, out_dir: str, output: Output = Output(), *,
                           batch_size: int = 64) -> list[str]:
  """One per-channel error figure per quantized activation; returns the paths."""
  images, source = sample_batch(config, batch_size)
  inputs = layer_inputs(config, variables, images)
  return [_save(activation_error_figure(module, variables, inputs[path_name(module.path)], source),
                os.path.join(out_dir, 'act_error', _file_name(path_name(module.path), output)),
                output)
          for module, _ in _quantized_layers(config, variables)
          if module.a_bits != FULL_PRECISION]


# metrics.jsonl keeps top-1 as a fraction; the figure shows percent.
_CURVES = (('loss', 'loss', 1.), ('top1', 'top-1 (%)', 100.))
_SPLIT_STYLES = (('train', {'linestyle': '-'}),
                 ('eval', {'linestyle': '--', 'marker': 'o', 'markersize': 4}))


def curves_figure(workdirs: Iterable[str]):
  """Loss and top-1 (%) against step, train and eval, one colour per run (a matplotlib figure).

  One legend under both panels: colour names the run, line style the split, so it does not
  repeat per panel or cover the curves.
  """
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout='constrained')
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  handles = []
  for i, workdir in enumerate(workdirs):
    color = colors[i % len(colors)]
    records = runs.read_metrics(workdir)
    for split, style in _SPLIT_STYLES:
      for ax, (metric, _, scale) in zip(axes, _CURVES):
        points = [(r['step'], r[metric] * scale) for r in records
                  if r['split'] == split and metric in r]
        if points:
          steps, values = zip(*points)
          ax.plot(steps, values, color=color, **style)
    handles.append(plt.Line2D([], [], color=color, label=os.path.basename(os.path.normpath(workdir))))
  handles += [plt.Line2D([], [], color='gray', label=split, **style)
              for split, style in _SPLIT_STYLES]
  for ax, (_, label, _) in zip(axes, _CURVES):
    ax.set_xlabel('step')
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  fig.legend(handles=handles, loc='outside lower center', ncols=min(len(handles), 6),
             fontsize=9, frameon=False)
  return fig


def plot_curves(workdirs: Iterable[str], path: str, output: Output = Output()) -> str:
  """Writes `curves_figure(workdirs)` to `path`; returns it."""
  return _save(curves_figure(workdirs), path, output)


def plot_run(workdir: str, compare: Iterable[str] = (), output: Output = Output(), *,
             batch_size: int = 64) -> list[str]:
  """Every plot of a run (curves with the `compare` runs); returns the file paths."""
  config, variables = runs.read_workdir(workdir)
  out_dir = os.path.join(workdir, PLOTS_DIR)
  return (plot_weights(config, variables, out_dir, output)
          + plot_activation_errors(config, variables, out_dir, output, batch_size=batch_size)
          + [plot_curves([workdir, *compare], os.path.join(out_dir, f'curves.{output.format}'),
                         output)])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  options = flags.FLAGS
  output = Output(options.format, options.dpi, options.width_in, options.height_in)
  for path in plot_run(options.workdir, options.compare, output, batch_size=options.batch_size):
    print(path)


def _define_flags():
  # Defined only when run as a program, so importing dqnn.plots adds no global flags.
  flags.DEFINE_string('workdir', None, 'The run to plot; figures go to <workdir>/plots.')
  flags.DEFINE_multi_string('compare', [], 'Other runs for the training-curve figure.')
  flags.DEFINE_integer('batch_size', 64, 'Images for the activation-error plots.')
  flags.DEFINE_enum('format', 'png', FORMATS, 'File format; pdf and svg are vector.')
  flags.DEFINE_integer('dpi', 150, 'Resolution of PNGs (and of rasters inside pdf/svg).')
  flags.DEFINE_float('width_in', 0., 'Figure width in inches (0 = each figure\'s own).')
  flags.DEFINE_float('height_in', 0., 'Figure height in inches (0 = each figure\'s own).')
  flags.mark_flags_as_required(['workdir'])


if __name__ == '__main__':
  _define_flags()
  app.run(main)
