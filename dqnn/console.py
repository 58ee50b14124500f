"""What a run prints: its own progress and summary, without libraries' INFO logs by default.

Orbax alone logs ~130 INFO lines per short run (checkpoint internals); they bury the lines that
say how training goes. dqnn's own INFO logs and every library's warnings and errors stay.
"""
import logging
import os
from typing import Any, Mapping, Sequence

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class _OwnInfoOnly(logging.Filter):
  """Passes dqnn's records and every library's warnings and errors."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.pathname.startswith(_PACKAGE_DIR)


def hide_library_info_logs() -> None:
  """Drops the INFO and DEBUG records of libraries (orbax, jax, grain...) from the console.

  Filters the root logger's handlers (absl's among them), which libraries' records reach
  whether they log through absl or through their own `logging` loggers.
  """
  for handler in logging.getLogger().handlers:
    if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
      handler.addFilter(_OwnInfoOnly())


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}h{rest // 60:02d}m' if hours else f'{rest // 60}m{rest % 60:02d}s'


def progress_line(step: int, total_steps: int, record: Mapping[str, float],
                  images_per_step: int, seconds_per_step: float) -> str:
  """`Step 200/1000 (20%): loss 2.3141, top-1 41.2%, 1,830 img/s, ETA 4m10s` (train record)."""
  parts = [f'loss {record["loss"]:.4f}']
  if 'top1' in record:
    parts.append(f'top-1 {100 * record["top1"]:.1f}%')
  if seconds_per_step > 0:
    parts.append(f'{images_per_step / seconds_per_step:,.0f} img/s')
    if step < total_steps:
      parts.append(f'ETA {_duration((total_steps - step) * seconds_per_step)}')
  return f'Step {step}/{total_steps} ({100 * step / total_steps:.0f}%): {", ".join(parts)}'


def closing_summary(final: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                    workdir: str, wall_seconds: float) -> str:
  """The run's outcome (`final` from this call, `records` from its metric log), where it lies
  and the commands that read it."""
  step = final['step']
  evals = [r for r in records if r.get('split') == 'eval' and 'top1' in r]
  result = (f': eval top-1 {100 * evals[-1]["top1"]:.2f}%, top-5 {100 * evals[-1]["top5"]:.2f}%'
            f' at step {evals[-1]["step"]}' if evals else '')
  if final.get('preempted'):
    head = (f'Stopped by a signal at step {step}, checkpoint saved; run the same command to '
            'resume.')
  elif any(name.startswith('train/') for name in final):
    head = f'Finished step {step}{result} ({_duration(wall_seconds)}).'
  else:
    head = f'Already finished at step {step}{result}; nothing to train.'
  return '\n'.join([
      head,
      f'Results in {workdir} (metrics.jsonl, checkpoints/). Next:',
      f'  python -m dqnn.report --workdir={workdir}',
      f'  python -m dqnn.export --workdir={workdir} --out=model.dqnn',
      f'  python -m dqnn.plots --workdir={workdir}',
      f'  tensorboard --logdir={workdir}'])
