"""Classification metrics and the metric log (TensorBoard event files + `metrics.jsonl`)."""
import json
from typing import Any, Mapping

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dqnn import files
from dqnn import summary_writer
from dqnn.variables import path_name

METRICS_FILE = 'metrics.jsonl'


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy against (optionally smoothed) integer labels."""
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def correct_top_k(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """Per-example 1.0 where the label is among the `k` largest logits."""
  _, top = jax.lax.top_k(logits, min(k, logits.shape[-1]))
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def layer_errors(quant_metrics: Mapping[str, Any]) -> dict[str, jax.Array]:
  """`{'act_error/<layer path>': value}` from the `quant_metrics` collection a model sowed."""
  errors = {}
  for path, value in jax.tree_util.tree_leaves_with_path(quant_metrics):
    names = [str(getattr(key, 'key', getattr(key, 'idx', key))) for key in path]
    # Drop the sow name, and the call index when a layer ran once.
    names = [n for n in names if n != 'act_relative_error']
    if names and names[-1] == '0':
      names.pop()
    errors['act_error/' + path_name(names)] = value
  return errors


def pending_sums(sums: Mapping[str, jax.Array] | None, count: int) -> dict[str, Any]:
  """Training sums not yet logged, as JSON (float32 values survive a float64 round trip)."""
  if not count:
    return {}
  return {'count': count, 'sums': {name: float(v) for name, v in jax.device_get(sums).items()}}


def resumed_sums(pending: Mapping[str, Any]) -> tuple[dict[str, np.ndarray] | None, int]:
  """(sums, count) from `pending_sums`' JSON: the next record then averages the same steps.

  Host float32 values: added to a step's (global, replicated) metrics they act as replicated
  constants on every process.
  """
  if not pending:
    return None, 0
  return ({name: np.asarray(v, np.float32) for name, v in pending['sums'].items()},
          pending['count'])


class MetricLog:
  """Writes scalars to TensorBoard and as JSON lines `{'step', 'split', ...}`.

  Only the main process writes; other processes only log to the console. The JSON lines file is
  rewritten whole on each write, since object stores (gs://) cannot append, and through a
  temporary file, so that a full disk or a crash mid-write leaves the earlier records intact.
  """

  def __init__(self, workdir: str, *, is_main_process: bool):
    self.writer = summary_writer.SummaryWriter(workdir if is_main_process else None)
    self._jsonl = epath.Path(workdir) / METRICS_FILE if is_main_process else None
    self._lines = self._read_records() if self._jsonl and self._jsonl.exists() else []

  def _read_records(self) -> list[str]:
    """The file's records; lines that are not one (damaged outside dqnn) are set aside."""
    lines = self._jsonl.read_text().splitlines(keepends=True)
    records = [line for line in lines if _is_record(line)]
    if len(records) != len(lines):
      damaged = self._jsonl.with_name(f'{METRICS_FILE}.damaged')
      files.atomic_write_text(damaged, ''.join(lines))
      logging.warning('%s: %d line(s) are not metric records and were dropped; the file as it '
                      'was is kept as %s.', self._jsonl, len(lines) - len(records), damaged)
    return records

  def truncate_after(self, step: int) -> None:
    """Drops records past `step`: after a resume they are recomputed, so keep one copy."""
    if self._jsonl and step > 0 and not self._lines:
      logging.warning('%s is missing or empty although the run resumes from step %d: the '
                      'records before it are lost; new ones start after it.', self._jsonl, step)
    kept = [line for line in self._lines if json.loads(line)['step'] <= step]
    if self._jsonl and kept != self._lines:
      self._lines = kept
      files.atomic_write_text(self._jsonl, ''.join(kept))

  def has_record(self, step: int, split: str) -> bool:
    """Whether the log holds a `split` record at `step` (main process only; False elsewhere)."""
    return any((record['step'], record.get('split')) == (step, split)
               for record in map(json.loads, self._lines))

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    scalars = {name: float(value) for name, value in scalars.items()}
    self.writer.write_scalars(step, {f'{split}/{name}': v for name, v in scalars.items()})
    if self._jsonl:
      self._lines.append(json.dumps({'step': step, 'split': split, **scalars}) + '\n')
      files.atomic_write_text(self._jsonl, ''.join(self._lines))

  def close(self) -> None:
    self.writer.flush()
    self.writer.close()


def _is_record(line: str) -> bool:
  try:
    record = json.loads(line)
  except ValueError:
    return False
  return isinstance(record, dict) and isinstance(record.get('step'), int)
