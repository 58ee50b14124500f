"""TensorBoard event files without TensorFlow (tensorboardX), for the training loop's metrics.

clu's metric writers import TensorFlow, which accelerator hosts need not have; this writer has
the two calls the loop uses (`write_scalars`, `write_images`).
"""
from typing import Mapping

import numpy as np


class SummaryWriter:
  """Scalars and images into `logdir`'s event files; `logdir=None` writes nothing."""

  def __init__(self, logdir: str | None):
    if logdir is None:
      self._writer = None
    else:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      self._writer = tensorboardX.SummaryWriter(logdir)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer:
      for name, value in scalars.items():
        self._writer.add_scalar(name, float(value), step)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: {name: uint8 [1, H, W, C]} (a batch of one, as clu's writers take)."""
    if self._writer:
      for name, image in images.items():
        self._writer.add_image(name, np.asarray(image)[0], step, dataformats='HWC')

  def flush(self) -> None:
    if self._writer:
      self._writer.flush()

  def close(self) -> None:
    if self._writer:
      self._writer.close()
