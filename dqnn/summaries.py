"""TensorBoard images the training loop writes at eval time: each quantized layer's weights.

Drawn from the loop's own model and variables (no rebuild from the config), so that training
depends on neither the plots, the report nor the export.
"""
from typing import Any

import flax.linen as nn
import jax

from dqnn import figures
from dqnn import tracing
from dqnn.quantizers import FULL_PRECISION
from dqnn.variables import path_name


def write_weight_images(writer, step: int, model: nn.Module, variables: dict[str, Any],
                        input_shape: tuple[int, ...]) -> None:
  """Writes each quantized layer's weight figure (`figures.weight_figure`, as `dqnn.plots` draws it) to TensorBoard (`dqnn.summary_writer`).

  `variables`: the model's eval variables; `input_shape`: one image's (H, W, C).
  """
  variables = jax.device_get(variables)
  images = {f'weights/{path_name(module.path)}':
                figures.figure_image(figures.weight_figure(module, variables))[None]
            for module, _ in tracing.quantized_layers(model, input_shape, variables)
            if module.w_bits != FULL_PRECISION}
  if images:
    writer.write_images(step, images)
