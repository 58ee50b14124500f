"""TensorBoard images the training loop writes at eval time: each quantized layer's weights.

Drawn from the loop's own model and variables (no rebuild from the config), so that training
depends on neither the plots, the report nor the export.
"""
from typing import Any

import flax.linen as nn
import jax
import matplotlib
matplotlib.use('Agg')  # Files only: no display, also on headless machines.
# pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt
import numpy as np

from dqnn import tracing
from dqnn.quantizers import FULL_PRECISION
from dqnn.quantizers.readout import kernel_levels, quantized_kernel
from dqnn.variables import WEIGHT_QUANTIZER, layer_variables
# pylint: enable=g-import-not-at-top,wrong-import-position


def weight_figure(module: nn.Module, variables: dict[str, Any]):
  """Histogram of one quantized layer's weights with its levels marked (a matplotlib figure)."""
  name = '/'.join(module.path)
  quantizer = layer_variables(variables, (*module.path, WEIGHT_QUANTIZER))
  table, _ = kernel_levels(module, quantizer)
  # A latent-weight quantizer trains its float `kernel`: show that; DQ trains w_q itself.
  if 'kernel' in quantizer['params']:
    weights, what = np.asarray(quantizer['params']['kernel']), 'latent kernel'
  else:
    weights, what = quantized_kernel(module, quantizer), 'w_q'
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.hist(weights.reshape(-1), bins=100, color='tab:blue', alpha=0.8)
  ax.set_yscale('log')
  # One tick per (channel, level) below the axis: where the learned levels lie.
  bottom = ax.get_ylim()[0]
  ax.plot(table.reshape(-1), np.full(table.size, bottom), '|', color='tab:red', markersize=12,
          alpha=0.5, label=f'levels ({table.shape[0]} x {table.shape[1]})')
  ax.set_title(f'{name}: {what}, W{module.w_bits} ({module.weight_quantizer})')
  ax.set_xlabel('weight')
  ax.set_ylabel('count')
  ax.legend(loc='upper right')
  fig.tight_layout()
  return fig


def figure_image(fig) -> np.ndarray:
  """An RGB uint8 `(H, W, 3)` rendering of a figure (closes it)."""
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  plt.close(fig)
  return image


def write_weight_images(writer, step: int, model: nn.Module, variables: dict[str, Any],
                        input_shape: tuple[int, ...]) -> None:
  """Writes each quantized layer's weight histogram to TensorBoard (`dqnn.summary_writer`).

  `variables`: the model's eval variables; `input_shape`: one image's (H, W, C).
  """
  variables = jax.device_get(variables)
  images = {f'weights/{"/".join(module.path)}': figure_image(weight_figure(module, variables))[None]
            for module, _ in tracing.quantized_layers(model, input_shape, variables)
            if module.w_bits != FULL_PRECISION}
  if images:
    writer.write_images(step, images)
