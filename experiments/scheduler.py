"""When a study's rows run: one subprocess per row, each once the rows it needs have finished.

Both study runners (`cifar100_study`, `budgeted_study`) say what their rows are, how one starts
and when one is done; this module decides when each starts. Each running row holds one slot: a
set of cores it is pinned to, or None (not pinned). On a 2-core CPU two one-core runs give
about 1.3x the throughput of one run on both cores (XLA's CPU convolutions scale poorly from one
thread to two), so the studies pin one row per core there.
"""
import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

Slot = set[int] | None  # The cores a row is pinned to; None = not pinned.


@dataclasses.dataclass(frozen=True)
class Job:
  """A row as the scheduler sees it."""
  name: str
  needs: tuple[str, ...] = ()  # Rows that must be done first (to start from, as a teacher).
  exclusive: bool = False  # Runs alone, on every slot's cores (not pinned).


def core_slots(workers: int, pin: bool) -> list[Slot]:
  """One slot per worker: this process's cores split evenly (`pin`), or None each."""
  if not pin:
    return [None] * workers
  cores = sorted(os.sched_getaffinity(0))
  if workers > len(cores):
    raise SystemExit(f'--workers={workers} exceeds the {len(cores)} cores to pin them to.')
  per_worker = len(cores) // workers
  return [set(cores[i * per_worker:(i + 1) * per_worker]) for i in range(workers)]


def log_path(runs_dir: os.PathLike, name: str) -> Path:
  """Where row `name`'s process writes its output."""
  return Path(runs_dir) / f'{name}.log'


def spawn(command: Sequence[str], *, cwd: os.PathLike, log_path: os.PathLike, cores: Slot,
          env: dict[str, str] | None = None) -> subprocess.Popen:
  """Starts a row's process pinned to `cores` (None: not pinned), appending its output to
  `log_path`."""
  pin = None if cores is None else (lambda: os.sched_setaffinity(0, cores))
  # The child keeps its own handle on the log; the parent's is closed at once.
  with open(log_path, 'a') as log:
    return subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=pin)


def run(jobs: Sequence[Job], *, slots: list[Slot], is_done: Callable[[str], bool],
        start: Callable[[Job, Slot], subprocess.Popen], on_done: Callable[[Job], None],
        log_path: Callable[[Job], os.PathLike], deadline: float = float('inf'),
        poll_s: float = 2.0) -> list[Job]:
  """Runs `jobs` in order as their needs and a free slot allow; returns the jobs left.

  A job is done when its process exits 0 and `is_done(name)` holds; then `on_done` is called.
  A job that fails is reported and the others go on; jobs that need it are left unstarted. A
  need that is recorded but also among `jobs` (being trained again) counts only once it is done
  in this call. Past `deadline` (time.monotonic()), the running jobs get SIGTERM (a dqnn run
  saves a checkpoint and stops) and are left for the next call.
  """
  pending, running, failed = list(jobs), [], []  # running: (job, process, slot)
  free = list(slots)
  while pending or running:
    if time.monotonic() > deadline:
      for _, process, _ in running:
        process.send_signal(signal.SIGTERM)
      for job, process, _ in running:
        process.wait()
        print(f'stopped {job.name} (time budget); it resumes on the next call', flush=True)
      return failed + pending + [job for job, _, _ in running if not is_done(job.name)]
    for entry in list(running):
      job, process, slot = entry
      if process.poll() is None:
        continue
      running.remove(entry)
      if not job.exclusive:
        free.append(slot)
      if process.returncode == 0 and is_done(job.name):
        print(f'done {job.name}', flush=True)
        on_done(job)
      else:
        failed.append(job)
        print(f'FAILED {job.name} (exit {process.returncode}); see {log_path(job)}', flush=True)
    unfinished = {job.name for job in pending + failed} | {job.name for job, _, _ in running}
    ready = [job for job in pending
             if all(is_done(name) and name not in unfinished for name in job.needs)]
    if not running and pending and not ready:
      missing = sorted({name for job in pending for name in job.needs})
      print(f'not started (the runs they need {missing} are not selected or failed): '
            f'{[job.name for job in pending]}', flush=True)
      return failed + pending
    # Rows start in their order: an exclusive one waits for the running ones, and holds the rest.
    if ready and not any(job.exclusive for job, _, _ in running):
      job = ready[0]
      if job.exclusive and not running:
        pending.remove(job)
        print(f'start {job.name}', flush=True)
        running.append((job, start(job, None), None))
        continue
      if not job.exclusive and free:
        slot = free.pop(0)
        pending.remove(job)
        print(f'start {job.name}' + (f' on cores {sorted(slot)}' if slot else ''), flush=True)
        running.append((job, start(job, slot), slot))
        continue
    time.sleep(poll_s)
  return failed
