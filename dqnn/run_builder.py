"""What a training config builds: `build(config, mesh) -> Run`, all of it, once.

Each part of the config goes to its owner (the dataset to `dqnn.data`, the schedule to
`schedules`, the optimizer to `optim`, the model through `runs`, the teacher to `distill`) and
the training loop receives the objects, with no config field left for it to read.
"""
import dataclasses
import functools
from typing import Callable, Iterator

import flax.linen as nn
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dqnn import data
from dqnn import distill
from dqnn import distributed
from dqnn import models
from dqnn import optim
from dqnn import run_config
from dqnn import runs
from dqnn import schedules
from dqnn.data import dali_input
from dqnn.data import train_input


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """When the loop logs, evaluates and saves, and how it treats the workdir it resumes."""
  log_every_steps: int
  eval_every_steps: int  # 0 = only at the end.
  checkpoint_every_steps: int  # 0 = only at the end.
  keep_checkpoints: int
  weight_images: bool
  on_corrupt_checkpoint: str
  trust_checkpoints_without_digest: bool
  allow_config_change: bool


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything a config builds for training."""
  info: data.DatasetInfo  # At the run's image size: its one source of image size and classes.
  model: nn.Module
  schedule: optax.Schedule
  tx: optax.GradientTransformation
  # The parameter groups' logged learning rates, as multiples of `schedule`.
  learning_rate_scales: dict[str, float]
  total_steps: int
  global_batch_size: int
  train_input: train_input.TrainingInput
  eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]  # One pass over the eval split.
  input_statistics: str
  seed: int
  label_smoothing: float
  teacher: distill.Teacher | None
  distill_temperature: float
  distill_weight: float
  init_from: str  # A float run's workdir to warm-start from, '' for none.
  bn_reestimation_batches: int
  loop: LoopSettings


def dataset_info(config: ml_collections.ConfigDict) -> data.DatasetInfo:
  """The dataset's facts at the run's image size; raises `data.DatasetNotFoundError` if it is
  not prepared, `data.DatasetDamagedError` if a file of it is truncated or replaced."""
  if config.dataset == data.FAKE:  # run_config.validate checked its sizes.
    return data.DatasetInfo(
        name=data.FAKE, num_classes=runs.num_classes(config), image_size=runs.image_size(config),
        train_split='train', eval_split='',
        num_train=config.num_train_steps * config.global_batch_size, num_eval=0)
  info = data.get_dataset_info(config.dataset, config.data_dir or None,
                               download=config.download)
  # Both splits, so that a damaged eval file stops the run now, not at its first eval.
  for split in (info.train_split, info.eval_split):
    data.check_split(info.name, config.data_dir or None, split)
  return dataclasses.replace(info, image_size=runs.image_size(config))


def training_input(config: ml_collections.ConfigDict, info: data.DatasetInfo,
                   mesh: Mesh) -> train_input.TrainingInput:
  """The run's training input, positioned at its first batch: the one place that picks its
  kind."""
  batches = {'global_batch_size': config.global_batch_size, 'seed': config.seed}
  if info.name == data.FAKE:
    return train_input.fake_input(info, mesh, **batches)
  if config.input_on_device:
    return train_input.device_input(info, config.data_dir or None, mesh, **batches)
  if config.input_backend == run_config.DALI:
    return dali_input.DaliInput(info, config.data_dir or None, NamedSharding(mesh, P('data')),
                                **batches, image_size=info.image_size)
  return train_input.grain_input(info, config.data_dir or None, mesh, **batches,
                                 num_workers=config.input_workers)


def learning_rate_schedule(config: ml_collections.ConfigDict, *, steps_per_epoch: int,
                           total_steps: int) -> optax.Schedule:
  opt = config.optimizer
  return schedules.create_learning_rate_schedule(
      schedule=config.schedule.name,
      peak_learning_rate=opt.learning_rate * config.global_batch_size
      / opt.learning_rate_batch_size,
      total_steps=total_steps,
      warmup_steps=int(config.schedule.warmup_epochs * steps_per_epoch),
      decay_boundaries=tuple(int(e * steps_per_epoch) for e in config.schedule.decay_epochs),
      decay_factor=config.schedule.decay_factor)


def create_optimizer(config: ml_collections.ConfigDict,
                     schedule: optax.Schedule) -> optax.GradientTransformation:
  opt = config.optimizer
  return optim.create_optimizer(
      schedule, momentum=opt.momentum, nesterov=opt.nesterov,
      weight_decay_rate=opt.weight_decay, level_lr_scale=opt.level_lr_scale,
      level_gradient=opt.level_gradient, quantizer_optimizer=opt.quantizer_optimizer,
      quantizer_lr_scale=opt.quantizer_lr_scale, residual=opt.residual,
      level_update=opt.level_update)


def loop_settings(config: ml_collections.ConfigDict) -> LoopSettings:
  return LoopSettings(
      log_every_steps=config.log_every_steps, eval_every_steps=config.eval_every_steps,
      checkpoint_every_steps=config.checkpoint_every_steps,
      keep_checkpoints=config.keep_checkpoints, weight_images=config.weight_images,
      on_corrupt_checkpoint=config.on_corrupt_checkpoint,
      trust_checkpoints_without_digest=config.get('trust_checkpoints_without_digest', False),
      allow_config_change=config.allow_config_change)


def build(config: ml_collections.ConfigDict, mesh: Mesh) -> Run:
  """The run a validated `config` describes, on the devices of `mesh`; writes nothing.

  Raises before training if the config is unusable: `distributed.SetupError` for a batch that
  does not split over the devices, `data.DatasetNotFoundError` / `data.DatasetDamagedError`,
  a ValueError for a model that does not take the dataset's images or a batch larger than the
  training split, `run_config.ConfigError` for a teacher that does not fit.
  """
  num_devices = mesh.devices.size
  distributed.check_train_batch_size(config.global_batch_size, num_devices)
  eval_batch_size = distributed.eval_batch_size(config.eval_batch_size, num_devices)
  # Process 0 downloads or prepares the dataset alone; the others then find it ready.
  info = distributed.process_zero_first(lambda: dataset_info(config), 'to prepare the dataset')
  models.check_input_size(config.model, info.image_size)

  inputs = training_input(config, info, mesh)
  steps_per_epoch = inputs.steps_per_epoch
  if steps_per_epoch < 1:
    raise ValueError(f'global_batch_size={config.global_batch_size} exceeds the '
                     f'{info.num_train} training examples.')
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else int(config.num_epochs * steps_per_epoch))
  schedule = learning_rate_schedule(config, steps_per_epoch=steps_per_epoch,
                                    total_steps=total_steps)
  model = runs.model_from_config(config)
  tx = create_optimizer(config, schedule)
  # Read before anything is written: a teacher that does not fit is an error before training.
  teacher = (distill.load_teacher(config, num_classes=info.num_classes,
                                  image_size=info.image_size)
             if distill.enabled(config) else None)
  return Run(
      info=info,
      model=model,
      schedule=schedule,
      tx=tx,
      learning_rate_scales={'learning_rate/levels': config.optimizer.level_lr_scale,
                            'learning_rate/quantizer': config.optimizer.quantizer_lr_scale},
      total_steps=total_steps,
      global_batch_size=config.global_batch_size,
      train_input=inputs,
      eval_batches=functools.partial(data.eval_batches, info, config.data_dir or None,
                                     global_batch_size=eval_batch_size,
                                     image_size=info.image_size,
                                     num_workers=config.input_workers),
      input_statistics=data.input_statistics(info.name),
      seed=config.seed,
      label_smoothing=config.label_smoothing,
      teacher=teacher,
      distill_temperature=config.distill.temperature,
      distill_weight=config.distill.weight,
      init_from=run_config.init_from_workdir(config),
      bn_reestimation_batches=config.get('bn_reestimation_batches', 0),
      loop=loop_settings(config))
