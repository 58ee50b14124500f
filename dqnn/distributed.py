"""Runs over several processes (TPU pod slices, multi-node GPU): connecting them, and the checks
and agreements a run needs from all of them.

`initialize` connects the processes from explicit settings (flags or `JAX_*` environment
variables) or JAX's cluster auto-detection (Cloud TPU, SLURM, Open MPI, Kubernetes). The other
functions are called by `dqnn.train` and are trivial for a single process.
"""
import contextlib
import dataclasses
import os
import re
import secrets
import sys
import time
from typing import Callable, Iterator, Mapping, TypeVar

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

# The environment variables read when the matching flag is not given. JAX reads the first and
# the last itself too; the process count and id have no JAX variable.
ENV_VARS = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS',
            'num_processes': 'JAX_NUM_PROCESSES',
            'process_id': 'JAX_PROCESS_ID',
            'local_device_ids': 'JAX_LOCAL_DEVICE_IDS'}
ALL_DEVICES = 'all'
# Written by process 0 into the workdir at start-up, read by the others, then removed.
WORKDIR_TOKEN = '.dqnn_shared_workdir_check'
# How long a process looks for process 0's token before calling the workdir not shared.
WORKDIR_TOKEN_WAIT_S = 3.0
# How long the processes wait for each other to connect (JAX's default is 300 s).
CONNECT_TIMEOUT_S = 300

_T = TypeVar('_T')


class SetupError(ValueError):
  """A run cannot start as set up (processes, batch sizes, workdir); the message says why."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """How this process joins a run; None = auto-detected (or a single process).

  local_device_ids: the accelerators this process drives; () = every one it can see.
  """
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None

  @classmethod
  def resolve(cls, environ: Mapping[str, str] = os.environ, **flag_values) -> 'Settings':
    """Flag values (None = not given) over the `ENV_VARS` environment variables."""
    values = {}
    for name, variable in ENV_VARS.items():
      value = flag_values.get(name)
      source = f'--{name}'
      if value is None and environ.get(variable, '') != '':
        value, source = environ[variable], variable
      if value is not None:
        values[name] = _parse(name, value, source)
    return cls(**values)

  @property
  def given(self) -> bool:
    return any(value is not None for value in dataclasses.astuple(self))


def _parse(name: str, value, source: str):
  try:
    if name == 'coordinator_address':
      if not re.fullmatch(r'.+:\d+', str(value)):
        raise ValueError
      return str(value)
    if name == 'local_device_ids':
      return parse_device_ids(str(value))
    number = int(value)
    if number < (1 if name == 'num_processes' else 0):
      raise ValueError
    return number
  except ValueError:
    expected = {'coordinator_address': 'HOST:PORT of process 0',
                'num_processes': 'a positive integer',
                'process_id': 'an integer from 0 to num_processes - 1',
                'local_device_ids': f"comma-separated device numbers or '{ALL_DEVICES}'"}[name]
    raise SetupError(f'{source}={value!r} is not {expected}.') from None


def parse_device_ids(text: str) -> tuple[int, ...]:
  """'0,1,3' -> (0, 1, 3); 'all' -> () (every device this process can see)."""
  if text.strip() == ALL_DEVICES:
    return ()
  ids = tuple(int(part) for part in text.split(','))
  if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
    raise ValueError(text)
  return ids


def _node_task_count(tasks_per_node: str, node_id: int) -> int:
  """Tasks on node `node_id` from SLURM's '4(x2),3' (4 on each of 2 nodes, then 3)."""
  counts = []
  for part in tasks_per_node.split(','):
    count, _, repeat = re.fullmatch(r'(\d+)(\(x(\d+)\))?', part.strip()).groups()
    counts += [int(count)] * int(repeat or 1)
  return counts[node_id]


def cluster_local_device_ids(environ: Mapping[str, str] = os.environ) -> tuple[int, ...] | None:
  """The local devices to use under SLURM or Open MPI, where JAX's choice would be wrong.

  JAX gives each SLURM / Open MPI process only the GPU numbered by its local rank: right for
  one process per GPU, but a node's only process would drive just GPU 0, and a process that
  sees one GPU (CUDA_VISIBLE_DEVICES bound per task) would ask for a GPU it cannot see. Both
  get every device they see instead; None leaves the choice to JAX.
  """
  if 'SLURM_JOB_ID' in environ and 'SLURM_LOCALID' in environ:
    tasks = (environ.get('SLURM_STEP_TASKS_PER_NODE') or environ.get('SLURM_TASKS_PER_NODE')
             or environ.get('SLURM_NTASKS_PER_NODE'))
    node_tasks = _node_task_count(tasks, int(environ.get('SLURM_NODEID', 0))) if tasks else None
  elif 'OMPI_COMM_WORLD_LOCAL_SIZE' in environ:
    node_tasks = int(environ['OMPI_COMM_WORLD_LOCAL_SIZE'])
  else:
    return None
  visible = environ.get('CUDA_VISIBLE_DEVICES', '')
  if node_tasks == 1 or (visible and len(visible.split(',')) == 1):
    return ()
  return None


def initialize(settings: Settings, *, multi_host: bool,
               environ: Mapping[str, str] = os.environ) -> bool:
  """Connects this process to the run's others; returns whether it did.

  Does nothing for a single-process run: neither `multi_host` (auto-detect) nor any setting.
  Must run before any other JAX call.
  """
  if not (multi_host or settings.given):
    return False
  local_device_ids = settings.local_device_ids
  if local_device_ids is None:
    local_device_ids = cluster_local_device_ids(environ)
  try:
    # An empty list skips JAX's one-GPU-per-process default and keeps every device visible.
    jax.distributed.initialize(
        coordinator_address=settings.coordinator_address,
        num_processes=settings.num_processes, process_id=settings.process_id,
        local_device_ids=None if local_device_ids is None else list(local_device_ids),
        initialization_timeout=CONNECT_TIMEOUT_S)
  except (ValueError, TypeError) as error:
    raise SetupError(
        f'Cannot start a multi-process run: {error} Outside a Cloud TPU pod, SLURM or Open MPI '
        '(where they are detected), give every process --coordinator_address=HOST:PORT (of '
        'process 0), --num_processes=N and its own --process_id=I, or the environment '
        'variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.') from None
  except jax.errors.JaxRuntimeError as error:
    raise SetupError(
        f'Process {jax.process_index()} could not connect to the coordinator '
        f'({settings.coordinator_address or "auto-detected"}) within {CONNECT_TIMEOUT_S} s: '
        f'{error}. Start every process of the run, with the same coordinator address and '
        'process count, and check that process 0 can be reached on that port.') from None
  return True


def describe() -> str:
  """One line on this process's place in the run, for the log."""
  return (f'JAX process {jax.process_index()}/{jax.process_count()}, '
          f'{jax.local_device_count()} local / {jax.device_count()} global devices.')


PEER_FAILURE_HINT = (
    'With several processes, the failure of any one stops them all: an error about a lost '
    'connection, a heartbeat or a barrier means another process died (its log says why). '
    'Re-running the same command on every host resumes from the last checkpoint.')


@contextlib.contextmanager
def failing_fast() -> Iterator[None]:
  """In a multi-process run, an unexpected error ends this process at once, with the hint.

  A normal exit would wait at jax.distributed's shutdown barrier for the other processes,
  which are themselves stuck in a collective with this one or already dead: minutes, then an
  abort. Exiting at once also makes the peers' next collective fail, so all stop in seconds.
  """
  try:
    yield
  except Exception:  # pylint: disable=broad-except
    if jax.process_count() == 1:
      raise
    logging.exception('Process %d of %d failed. %s', jax.process_index(), jax.process_count(),
                      PEER_FAILURE_HINT)
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


def check_train_batch_size(batch_size: int, num_devices: int) -> None:
  """Raises `SetupError` naming batch sizes that work when `batch_size` doesn't split."""
  if batch_size % num_devices:
    below = batch_size // num_devices * num_devices
    nearest = f'{below} or {below + num_devices}' if below else f'{num_devices}'
    raise SetupError(
        f'global_batch_size={batch_size} does not split evenly over {num_devices} devices; '
        f'use a multiple of {num_devices} (e.g. {nearest}).')


def eval_batch_size(batch_size: int, num_devices: int) -> int:
  """`batch_size` rounded down to a multiple of the device count (at least one per device).

  Eval batches are padded with masked examples anyway, so the size changes only the speed.
  """
  rounded = max(batch_size // num_devices, 1) * num_devices
  if rounded != batch_size:
    logging.info('eval_batch_size=%d does not split over %d devices; evaluating in batches '
                 'of %d.', batch_size, num_devices, rounded)
  return rounded


def process_zero_flag(flag: bool) -> bool:
  """Process 0's `flag`, on every process (a barrier): for decisions only process 0 can make,
  such as those that read files only it writes."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def process_zero_first(fn: Callable[[], _T], what: str) -> _T:
  """Runs `fn` on process 0, then, once it succeeded, on the others; returns its result.

  For work every process needs but only one should do the first time (downloading or
  preparing a dataset into a shared directory); afterwards `fn` finds it done.
  """
  if jax.process_count() == 1:
    return fn()
  if jax.process_index() == 0:
    try:
      result = fn()
    except Exception:
      process_zero_flag(False)
      raise
    process_zero_flag(True)
    return result
  if not process_zero_flag(True):  # Only process 0's value counts.
    raise SetupError(f'Process 0 failed {what}; its log says why.')
  return fn()


def _sees_token(token: epath.Path, nonce: str) -> bool:
  # A shared filesystem may show a new file a moment late; wait briefly before concluding.
  deadline = time.monotonic() + WORKDIR_TOKEN_WAIT_S
  while True:
    try:
      if token.read_text() == nonce:
        return True
    except OSError:
      pass
    if time.monotonic() > deadline:
      return False
    time.sleep(0.2)


def _can_write(directory: epath.Path, name: str) -> str:
  """'' if a file can be written (and removed) in `directory`, else the error."""
  try:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text('')
    (directory / name).unlink()
    return ''
  except OSError as error:
    return str(error)


def check_shared_workdir(workdir: str) -> None:
  """Creates `workdir` and checks that every process can write it and sees the same directory.

  Checkpoints are written jointly by all processes and read back by each, so a node-local
  workdir would otherwise fail only much later, inside a checkpoint barrier. Process 0 writes
  a token, the others look for it and write their own; fails in seconds with a `SetupError`.
  """
  path = epath.Path(workdir)
  if jax.process_count() == 1:
    if error := _can_write(path, WORKDIR_TOKEN):
      raise SetupError(f'Cannot write to --workdir={workdir}: {error}')
    return
  token = path / WORKDIR_TOKEN
  nonce = int(multihost_utils.broadcast_one_to_all(np.int32(secrets.randbits(31))))
  is_main = jax.process_index() == 0
  error = ''
  if is_main:
    try:
      path.mkdir(parents=True, exist_ok=True)
      token.write_text(str(nonce))
    except OSError as write_error:
      error = str(write_error)
  if not process_zero_flag(not error):
    raise SetupError(f'Process 0 cannot write to --workdir={workdir}: '
                     f'{error or "its log says why"}')
  try:
    sees = is_main or _sees_token(token, str(nonce))
    writes = is_main or not _can_write(path, f'{WORKDIR_TOKEN}.{jax.process_index()}')
    status = multihost_utils.process_allgather(np.array([sees, writes], np.int32))
  finally:
    if is_main:
      token.unlink(missing_ok=True)
  blind = [i for i, (seen, _) in enumerate(status) if not seen]
  if blind:
    raise SetupError(
        f'--workdir={workdir} is not one directory shared by all processes: process(es) '
        f'{_names(blind)} do not see the file process 0 wrote there. Checkpoints need a '
        'directory every host reads and writes (a network filesystem or a gs:// bucket), '
        'passed as the same --workdir to every process.')
  read_only = [i for i, (_, wrote) in enumerate(status) if not wrote]
  if read_only:
    raise SetupError(f'Process(es) {_names(read_only)} cannot write to --workdir={workdir}; '
                     'every process writes its part of each checkpoint there.')


def _names(processes: list[int]) -> str:
  shown = ', '.join(map(str, processes[:8]))
  return shown + (f' and {len(processes) - 8} more' if len(processes) > 8 else '')


def gather_global_batch(local_images: np.ndarray) -> np.ndarray:
  """Every process's slice of a batch, concatenated in process order, on every process.

  The order is the global batch's: the 'data' mesh lists devices by process.
  """
  return np.asarray(multihost_utils.process_allgather(local_images, tiled=True))


def preemption_message(step: int) -> str:
  if jax.process_count() == 1:
    return f'Saved a checkpoint at step {step} and stopped.'
  return (f'A preemption notice (SIGTERM) reached one of the {jax.process_count()} processes: '
          f'all saved a checkpoint at step {step} and stopped. Re-run to resume.')
