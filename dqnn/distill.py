"""Knowledge distillation from a teacher network (`config.distill`).

The student's loss mixes the label cross-entropy with the teacher's soft targets:

    (1 - weight) * CE(labels, student) + weight * T² * KL(softmax(teacher / T) || softmax(student / T))

(Hinton et al. 2015; T² keeps the soft term's gradient scale independent of T). `weight=1` is the
label-free setting N2UQ trains with; `weight=0` is plain cross-entropy.

`distillation_loss` and `teacher_logits` are all another Flax loop needs (docs/porting.md).
`load_teacher` reads a finished dqnn run (its latest checkpoint) as the teacher of a training run;
the run records the teacher's step and a digest of its variables in `TEACHER_FILE`, so that a
resume against a changed teacher is refused.
"""
import dataclasses
import hashlib
import json
from typing import Any

from absl import logging
from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dqnn import checkpoint
from dqnn import files
from dqnn import metrics
from dqnn import runs
from dqnn.run_config import ConfigChangedError, ConfigError

TEACHER_FILE = 'teacher.json'


def soft_cross_entropy(student_logits: jax.Array, teacher_logits: jax.Array,
                       temperature: float) -> jax.Array:
  """Per-example T² * KL(softmax(teacher / T) || softmax(student / T)), in float32."""
  student = student_logits.astype(jnp.float32) / temperature
  teacher = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
  log_targets = jax.nn.log_softmax(teacher)
  # KL rather than soft cross-entropy: the same gradient, and 0 for a student that matches.
  kl = jnp.sum(jnp.exp(log_targets) * (log_targets - jax.nn.log_softmax(student)), axis=-1)
  return temperature ** 2 * kl


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array,
                      *, temperature: float = 1.0, weight: float = 1.0,
                      label_smoothing: float = 0.0) -> jax.Array:
  """Per-example `(1 - weight) * CE(labels) + weight * T² * KL(teacher_T || student_T)`.

  `labels` are integer classes (unused when `weight=1`); no gradient flows into the teacher.
  """
  soft = soft_cross_entropy(student_logits, teacher_logits, temperature)
  if weight == 1:
    return soft
  hard = metrics.cross_entropy(student_logits, labels, label_smoothing)
  return (1 - weight) * hard + weight * soft


def teacher_logits(module: nn.Module, variables: Any, images: jax.Array,
                   **apply_kwargs) -> jax.Array:
  """The teacher's float32 logits on `images`, without gradient.

  `apply_kwargs` go to `module.apply`: pass `train=False` to a module with a train flag (every
  dqnn model), so that BatchNorm uses its running statistics and nothing is updated.
  """
  logits = module.apply(jax.lax.stop_gradient(variables), images, **apply_kwargs)
  return jax.lax.stop_gradient(logits).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A finished run as a teacher: its model (eval mode) and eval-time variables."""
  workdir: str
  model: nn.Module
  variables: dict[str, Any]
  step: int
  digest: str  # sha256 over the digests of every array of `variables`.

  def record(self) -> dict[str, Any]:
    return {'workdir': self.workdir, 'step': self.step, 'digest': self.digest}


def enabled(config: ml_collections.ConfigDict) -> bool:
  return bool(config.get('distill') and config.distill.teacher_workdir)


def load_teacher(config: ml_collections.ConfigDict, *, num_classes: int,
                 image_size: int) -> Teacher:
  """The teacher `config.distill` names, checked against the student's classes and input size.

  Raises `ConfigError` if the teacher's run is missing, or was trained for other classes or at
  another resolution; `CorruptCheckpointError` if its latest checkpoint is damaged.
  """
  workdir = config.distill.teacher_workdir
  try:
    teacher_config, variables = runs.read_workdir(workdir)
  except FileNotFoundError as error:
    raise ConfigError(f'distill.teacher_workdir: {error}') from None
  teacher_classes = runs.num_classes(teacher_config)
  teacher_size = runs.image_size(teacher_config)
  if (teacher_classes, teacher_size) != (num_classes, image_size):
    raise ConfigError(
        f'distill.teacher_workdir={workdir!r}: the teacher ({teacher_config.model} on '
        f'{teacher_config.dataset}) has {teacher_classes} classes at {teacher_size}x'
        f'{teacher_size}, this run {num_classes} classes at {image_size}x{image_size}. Use a '
        'teacher trained on this dataset at this image size.')
  teacher_config.dtype = config.distill.teacher_dtype
  model = runs.model_from_config(teacher_config)
  with checkpoint.create_manager(workdir, read_only=True) as manager:
    step = manager.latest_step()
  digests = checkpoint.digest(variables)
  digest = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
  return Teacher(workdir=workdir, model=model, variables=variables, step=int(step),
                 digest=digest)


def check_and_record(teacher: Teacher, workdir: str, *, resuming: bool, allow_change: bool,
                     write: bool) -> None:
  """Compares `teacher` with the one `workdir`'s run trained with so far, then records it.

  A resumed run whose teacher changed (another step or other weights) is refused with
  `ConfigChangedError` unless `allow_change`, which logs a warning and records the new teacher.
  """
  path = epath.Path(workdir) / TEACHER_FILE
  previous = json.loads(path.read_text()) if resuming and path.exists() else None
  now = teacher.record()
  if previous is not None and (previous['step'], previous['digest']) != (now['step'],
                                                                          now['digest']):
    message = (
        f'{workdir} was trained with the teacher {previous["workdir"]} at step '
        f'{previous["step"]} (digest {previous["digest"][:12]}), but the teacher is now at step '
        f'{now["step"]} (digest {now["digest"][:12]}); refusing to resume. Restore that '
        'teacher, use a new --workdir, or pass --config.allow_config_change=True to go on '
        'with this one.')
    if not allow_change:
      raise ConfigChangedError(message)
    logging.warning('%s', message.replace('refusing to resume', 'resuming as allowed'))
  if write:
    files.atomic_write_text(path, json.dumps(now, indent=2, sort_keys=True))
