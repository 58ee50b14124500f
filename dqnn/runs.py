"""A training run: its class count, image size and model, and reading a finished run back.

A run's workdir holds `run_config.CONFIG_FILE` (the config it trains with),
`metrics.METRICS_FILE` (one JSON record per log or eval step), TensorBoard event files and
`checkpoint.CHECKPOINT_DIR/<step>`. Each file's name is defined by the module that writes it;
training (`dqnn.run_builder`), distillation, export, report and plots compute a config's class
count, image size and model through this module, each in one function.
"""
import json
import os
from typing import Any

from etils import epath
import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from dqnn import checkpoint
from dqnn import metrics
from dqnn import models
from dqnn import run_config
from dqnn.data import datasets
from dqnn.variables import COLLECTIONS


def num_classes(config: ml_collections.ConfigDict) -> int:
  """The class count a config's model is built with (known without reading the dataset)."""
  if config.dataset in datasets.SUPPORTED_DATASETS:
    return datasets.spec(config.dataset).num_classes
  return config.num_classes


def image_size(config: ml_collections.ConfigDict) -> int:
  """The input resolution a config trains at: its `image_size`, else its dataset's."""
  return config.image_size or datasets.spec(config.dataset).image_size


def model_from_config(config: ml_collections.ConfigDict, *,
                      classes: int | None = None) -> nn.Module:
  """The config's model, with `classes` outputs (default `num_classes(config)`)."""
  return models.create_model(config.model,
                             num_classes=num_classes(config) if classes is None else classes,
                             policy=models.QuantPolicy.from_config(config.quant),
                             dtype=jnp.dtype(config.dtype))


def read_workdir(workdir: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """A training run's config and eval-time variables (params, batch_stats, quant_stats).

  Raises FileNotFoundError if `workdir` is not a training run, `CorruptCheckpointError` if its
  latest checkpoint differs from what was saved.
  """
  saved = run_config.read(workdir) if os.path.isdir(workdir) else None
  if saved is None:
    raise FileNotFoundError(f'{workdir!r} is not a training run: it has no '
                            f'{run_config.CONFIG_FILE}. Pass the --workdir a training run used.')
  config = ml_collections.ConfigDict(saved)
  state = checkpoint.restore_state_dict(workdir)
  # Closed-form activation quantizers keep their levels in quant_stats, so it is needed too.
  variables = {name: state.get(name) or {} for name in COLLECTIONS}
  return config, variables


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The run's metric records, in the order written."""
  text = (epath.Path(workdir) / metrics.METRICS_FILE).read_text()
  return [json.loads(line) for line in text.splitlines() if line.strip()]
