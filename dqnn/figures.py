"""The figures both the training loop's TensorBoard images and `dqnn.plots` draw.

matplotlib is imported on the first figure, so importing training loads none of it.
"""
import flax.linen as nn
import numpy as np

from dqnn.quantizers import readout
from dqnn.variables import WEIGHT_QUANTIZER, layer_variables, path_name

# A dot per (channel, level) stays readable up to this many level tables; above it the weight
# figure shows each level's spread over the channels instead.
MAX_CHANNEL_ROWS = 16


def pyplot():
  """`matplotlib.pyplot`, drawing to files only (no display, also on headless machines)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def weight_figure(module: nn.Module, variables):
  """Histogram of one quantized layer's weights above its learned levels (a matplotlib figure).

  The histogram is linear: the levels' own counts are what matters, and a log axis made the
  rare outer levels look as common as the central ones. Beneath it, sharing the weight axis:
  up to `MAX_CHANNEL_ROWS` level tables one row of dots per table, so each channel's levels
  read apart; above that (64 channels x 4 levels of dots would merge) each level index's
  min-max range over the channels with its median, which shows how far channels' levels
  spread at any channel count.
  """
  plt = pyplot()
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  name = path_name(module.path)
  quantizer = layer_variables(variables, (*module.path, WEIGHT_QUANTIZER))
  table, _ = readout.kernel_levels(module, quantizer)
  table = np.sort(table, axis=1)  # Level index k = a channel's k-th smallest level.
  # A latent-weight quantizer trains its float `kernel`: show that; DQ trains w_q itself.
  if 'kernel' in quantizer['params']:
    weights, what = np.asarray(quantizer['params']['kernel']), 'latent kernel'
  else:
    weights, what = readout.quantized_kernel(module, quantizer), 'w_q'
  groups, count = table.shape
  rows_are = 'channel' if groups == module.features else 'level table'
  fig, (hist, strip) = plt.subplots(
      2, 1, figsize=(6, 4.5), sharex=True, layout='constrained',
      gridspec_kw={'height_ratios': (3, 2 if groups > 1 else 1)})
  hist.hist(weights.reshape(-1), bins=100, color='tab:blue')
  hist.set_ylabel('count')
  hist.set_title(f'{name}\n{what}, W{module.w_bits} ({module.weight_quantizer}), '
                 f'{groups} x {count} levels', fontsize=9)
  if groups <= MAX_CHANNEL_ROWS:
    rows = np.repeat(np.arange(groups), count)
    strip.scatter(table.reshape(-1), rows, s=12, color='tab:red', zorder=2)
    # As many channel numbers as the figure's height fits.
    strip.yaxis.set_major_locator(ticker.MaxNLocator('auto', integer=True))
    strip.tick_params(axis='y', labelsize=8)
    strip.set_ylim(groups - 0.5, -0.5)
    strip.set_ylabel(rows_are if groups > 1 else 'shared', fontsize=8)
  else:
    low, median, high = np.percentile(table, (0, 50, 100), axis=0)
    index = np.arange(count)
    strip.hlines(index, low, high, color='tab:red', linewidth=3, alpha=0.5,
                 label=f'min-max over {groups} {rows_are}s')
    strip.plot(median, index, '|', color='black', markersize=10, label='median')
    strip.set_ylim(count - 0.5, -0.5)
    strip.yaxis.get_major_locator().set_params(integer=True)
    strip.set_ylabel('level index', fontsize=8)
    strip.legend(fontsize=7, loc='lower left')  # Sorted levels leave that corner empty.
  strip.grid(axis='x', alpha=0.3)
  strip.set_xlabel('weight')
  return fig


def figure_image(fig) -> np.ndarray:
  """An RGB uint8 `(H, W, 3)` rendering of a figure (closes it)."""
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  pyplot().close(fig)
  return image
