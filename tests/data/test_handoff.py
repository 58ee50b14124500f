"""Tests for dqnn.data.handoff: batches through a worker's reused shared memory."""

from multiprocessing import shared_memory

import numpy as np
import pytest

from dqnn.data import handoff


def _batch(i, rows=3):
  rng = np.random.default_rng(i)
  return {'image': rng.integers(0, 256, (rows, 5, 7, 3), dtype=np.uint8),
          'label': np.arange(rows, dtype=np.int32) + i, 'mask': rng.random(rows) < 0.5}


def _assert_same(got, want):
  assert got.keys() == want.keys()
  for key in want:
    assert got[key].dtype == want[key].dtype
    np.testing.assert_array_equal(got[key], want[key])


def test_batches_arrive_whole_in_memory_of_their_own_while_slots_are_reused():
  worker, reader = handoff.worker_side(), handoff.training_side()
  sent = [_batch(i) for i in range(3 * handoff.RING_SLOTS)]
  records = []
  got = []
  for batch in sent:
    records.append(worker(batch))
    got.append(reader(records[-1]))
  assert all(r.at is not None for r in records)  # Every batch went through the ring...
  assert len({r.ring for r in records}) == 1 and len({r.at for r in records}) == handoff.RING_SLOTS
  for g, s in zip(got, sent):  # ...and reusing its slots changed no batch already read.
    _assert_same(g, s)


def test_the_reader_unlinks_the_ring_so_nothing_is_left_in_dev_shm():
  worker, reader = handoff.worker_side(), handoff.training_side()
  record = worker(_batch(0))
  shared_memory.SharedMemory(record.ring).close()  # The worker's ring has a name until read...
  reader(record)
  with pytest.raises(FileNotFoundError):
    shared_memory.SharedMemory(record.ring)  # ...and none after.


def test_a_full_ring_hands_the_batch_in_its_record_and_reading_that_frees_the_ring(monkeypatch):
  monkeypatch.setattr(handoff, 'SLOT_WAIT_S', 0.01)
  worker, reader = handoff.worker_side(), handoff.training_side()
  sent = [_batch(i) for i in range(handoff.RING_SLOTS + 2)]
  # Nothing read yet (or the reads were dropped, as grain drops queued elements on set_state).
  unread = [worker(b) for b in sent[:handoff.RING_SLOTS]]
  assert all(r.at is not None for r in unread)
  overflow = worker(sent[handoff.RING_SLOTS])
  assert overflow.at is None  # The ring is full: the batch travels in the record.
  _assert_same(reader(overflow), sent[handoff.RING_SLOTS])
  after = worker(sent[-1])  # Read past every unread slot: the ring is free again.
  assert after.at is not None
  _assert_same(reader(after), sent[-1])


def test_a_batch_of_another_size_gets_a_new_ring():
  worker, reader = handoff.worker_side(), handoff.training_side()
  small, large = _batch(0, rows=2), _batch(1, rows=9)
  first, second = worker(small), worker(large)
  assert first.ring != second.ring and second.at is not None
  _assert_same(reader(first), small)
  _assert_same(reader(second), large)


@pytest.mark.parametrize('element', [[{'a': np.zeros(2)}], {'window': (1, 2)}, 7])
def test_elements_that_are_not_dicts_of_arrays_pass_through(element):
  worker, reader = handoff.worker_side(), handoff.training_side()
  assert reader(worker(element)) is element


def test_too_little_shared_memory_is_one_error_naming_the_fix(monkeypatch):
  def no_space(fd, offset, length):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(handoff.os, 'posix_fallocate', no_space, raising=False)
  with pytest.raises(OSError, match=r'needs \d+ MiB of shared memory .* --shm-size'):
    handoff.worker_side()(_batch(0))
