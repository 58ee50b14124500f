"""Batches handed from grain's worker processes to the training process through shared memory
that each worker allocates once.

grain's `mp_prefetch` copies every numpy array a worker yields into a new shared-memory block,
which the kernel must allocate and zero and both processes must fault in page by page: ~150 us
an image for a batch of 224px images, a quarter of what making a resized one costs
(docs/results.md). Here
a worker copies each batch into the next slot of a ring it allocated once and yields a small
`_Handed` record; the training process copies the batch out and writes the sequence number it
has read into the ring's header, which frees every slot of that sequence number or below.

`worker_side` goes before `mp_prefetch`, `training_side` after it. Elements that are not flat
dicts of numpy arrays pass through as they are. A worker's ring takes RING_SLOTS batches of
/dev/shm (4 x 38.5 MB for a host batch of 256 224px images), about what grain's blocks in flight
took.
"""

from __future__ import annotations

import dataclasses
import os
import time
from multiprocessing import shared_memory
from typing import Any

import numpy as np

# One slot being made, grain's queue (1 per worker), interleave's buffer and one being copied
# out; a worker that finds its next slot still unread waits, as grain's full queue makes it.
RING_SLOTS = 4
# A slot unread this long was dropped (grain discards queued elements on `set_state`) or its
# reader is busy elsewhere (eval, a checkpoint): the batch then travels in its record instead,
# and reading it frees the ring again.
SLOT_WAIT_S = 0.25
_HEADER_BYTES = 64  # int64 sequence number read so far, then padding to a cache line.
_ALIGN = 64


@dataclasses.dataclass(frozen=True)
class _Handed:
  """What the worker yields: batch `seq` of the ring named `ring`, in the slot at byte `at` with
  fields (key, dtype, shape, byte offset in the slot), or in `batch` itself where `at` is None."""
  ring: str
  seq: int
  at: int | None
  fields: tuple[tuple[str, str, tuple[int, ...], int], ...] = ()
  batch: Any = None


def _layout(batch: dict[str, np.ndarray]):
  """(fields, slot bytes) of a batch: each array's (key, dtype, shape, offset)."""
  fields, offset = [], 0
  for key, value in batch.items():
    fields.append((key, value.dtype.str, tuple(value.shape), offset))
    offset += -(-value.nbytes // _ALIGN) * _ALIGN
  return tuple(fields), offset


def _flat_arrays(element) -> bool:
  return isinstance(element, dict) and all(isinstance(v, np.ndarray) for v in element.values())


class _WorkerSide:
  """Map run in a worker process, in element order: batch -> `_Handed`."""

  def __init__(self):
    self._shm = None  # The ring: header, then RING_SLOTS slots of `_slot_bytes`.
    self._read_so_far = None  # The header's int64, written by the training process.
    self._slot_bytes = 0
    self._seq = 0

  def __call__(self, element):
    if not _flat_arrays(element):
      return element
    seq, self._seq = self._seq, self._seq + 1
    fields, slot_bytes = _layout(element)
    if slot_bytes != self._slot_bytes:
      self._new_ring(slot_bytes, seq)
    if not _wait_until(lambda: self._read_so_far[0] >= seq - RING_SLOTS):
      return _Handed(self._shm.name, seq, None, batch=element)
    at = _HEADER_BYTES + seq % RING_SLOTS * slot_bytes
    for key, dtype, shape, offset in fields:
      np.copyto(np.ndarray(shape, dtype, self._shm.buf, at + offset), element[key])
    return _Handed(self._shm.name, seq, at, fields)

  def _new_ring(self, slot_bytes: int, first_seq: int):
    if self._shm is not None:  # The training process keeps its own mapping of the old ring.
      self._read_so_far = None  # A mapping closes only once no array views it.
      self._shm.close()
    self._shm = _allocated_shared_memory(_HEADER_BYTES + RING_SLOTS * slot_bytes)
    self._read_so_far = np.ndarray((1,), np.int64, self._shm.buf)
    self._read_so_far[0] = first_seq - 1  # Every slot is free.
    self._slot_bytes = slot_bytes


def _allocated_shared_memory(size: int) -> shared_memory.SharedMemory:
  """A new shared-memory block whose pages exist now: a full /dev/shm is this one error, not a
  SIGBUS when a batch is written."""
  shm = shared_memory.SharedMemory(create=True, size=size)
  if hasattr(os, 'posix_fallocate'):  # Linux; elsewhere the block is reserved on creation.
    try:
      os.posix_fallocate(shm._fd, 0, size)  # pylint: disable=protected-access
    except OSError as e:
      shm.close()
      shm.unlink()
      raise OSError(f'An input worker needs {size / 2**20:.0f} MiB of shared memory (/dev/shm) '
                    f'for its batches and cannot have it ({e}): give the host or container more '
                    '(docker run --shm-size=...) or use fewer input_workers.') from e
  return shm


def _wait_until(ready) -> bool:
  """Polls `ready()` with growing sleeps for up to SLOT_WAIT_S; whether it became true."""
  deadline, pause = time.monotonic() + SLOT_WAIT_S, 1e-4
  while not ready():
    if time.monotonic() > deadline:
      return False
    time.sleep(pause)
    pause = min(2 * pause, 0.01)
  return True


class _TrainingSide:
  """Map run in the training process: `_Handed` -> the batch, in memory of its own.

  Rings stay mapped while this map lives, i.e. while its dataset does (a record still queued may
  name a ring whose worker has ended); dqnn iterates a training dataset once and builds a new
  eval dataset for every evaluation.
  """

  def __init__(self):
    self._rings: dict[str, tuple] = {}

  def __call__(self, element):
    if not isinstance(element, _Handed):
      return element
    shm, read_so_far = self._attach(element.ring)
    if element.at is None:
      batch = element.batch
    else:
      batch = {key: np.ndarray(shape, dtype, shm.buf, element.at + offset).copy()
               for key, dtype, shape, offset in element.fields}
    read_so_far[0] = max(read_so_far[0], element.seq)
    return batch

  def _attach(self, name: str):
    if name not in self._rings:
      shm = shared_memory.SharedMemory(name)
      # Both processes keep their mapping; without a name, nothing is left in /dev/shm however
      # either process ends.
      shm.unlink()
      self._rings[name] = shm, np.ndarray((1,), np.int64, shm.buf)
    return self._rings[name]


def worker_side():
  """The map that hands a worker's batches over (put it right before `mp_prefetch`)."""
  return _WorkerSide()


def training_side():
  """The map that takes them in the training process (right after `mp_prefetch`)."""
  return _TrainingSide()
