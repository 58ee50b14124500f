"""The .dqnn file: bit packing, the layout, and one clear error per broken file."""
import hashlib
import json
import math
import os
import re
import struct

import numpy as np
import pytest

from dqnn import files
from dqnn.export import format as fmt
from faults_testlib import fill_disk_after


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 8])
@pytest.mark.parametrize('count', [1, 7, 8, 13, 1000])
def test_pack_round_trips_in_ceil_bits_count_over_8_bytes(bits, count):
  indices = np.random.default_rng(bits * count).integers(0, 2 ** bits, count)
  packed = fmt.pack_indices(indices, bits)
  assert packed.dtype == np.uint8
  assert packed.nbytes == math.ceil(bits * count / 8) == fmt.packed_nbytes(count, bits)
  np.testing.assert_array_equal(fmt.unpack_indices(packed, count, bits), indices)


def test_bit_layout_is_little_endian_and_dense():
  # Index i occupies stream bits [i*b, (i+1)*b), least significant first.
  assert fmt.pack_indices(np.array([1, 2, 3]), 2).tolist() == [0b00111001]
  # 3-bit: 5, 3, 7 -> stream 101 110 111 (LSB first) -> byte 0 = 0b11011101, byte 1 = 0b1.
  assert fmt.pack_indices(np.array([5, 3, 7]), 3).tolist() == [0b11011101, 0b1]


def test_pack_rejects_out_of_range_indices_and_bits():
  with pytest.raises(ValueError, match='lie in'):
    fmt.pack_indices(np.array([4]), 2)
  with pytest.raises(ValueError, match='pack to'):
    fmt.pack_indices(np.array([0]), 5)


def _small_export():
  return fmt.ExportedModel(
      {'model': 'tiny', 'ops': [], 'output': 0},
      {'a/levels': np.arange(8, dtype=np.float32).reshape(2, 4),
       'a/indices': fmt.pack_indices(np.arange(5) % 4, 2)})


def test_file_round_trip_with_aligned_blobs(tmp_path):
  path = tmp_path / 'm.dqnn'
  size = fmt.save(_small_export(), path)
  raw = path.read_bytes()
  assert len(raw) == size and raw[:8] == fmt.MAGIC
  version, header_nbytes = struct.unpack_from('<IQ', raw, 8)
  assert version == fmt.VERSION
  data_start = -(-(20 + header_nbytes) // 64) * 64
  loaded = fmt.load(path, expected_model='tiny')
  for name, array in _small_export().tensors.items():
    np.testing.assert_array_equal(loaded.tensors[name], array)
  # The last tensor (2 bytes) at offset 64, then the 32-byte sha256 trailer.
  assert data_start % 64 == 0 and size == data_start + 64 + 2 + 32


@pytest.mark.parametrize('cut', [4, 12, 30, -1])
def test_truncated_file_is_one_clear_error(tmp_path, cut):
  raw = fmt.to_bytes(_small_export())
  with pytest.raises(fmt.ExportFormatError, match='truncated'):
    fmt.from_bytes(raw[:cut])


def test_a_newer_version_asks_to_upgrade_dqnn():
  raw = bytearray(fmt.to_bytes(_small_export()))
  struct.pack_into('<I', raw, 8, fmt.VERSION + 1)
  with pytest.raises(fmt.ExportFormatError,
                     match=f'version {fmt.VERSION + 1}, written by a newer dqnn.*Upgrade dqnn'):
    fmt.from_bytes(bytes(raw))


def _around_header(header_bytes: bytes) -> bytes:
  """A well-formed file around `header_bytes`: right length, right checksum."""
  body = bytearray(struct.pack('<8sIQ', fmt.MAGIC, fmt.VERSION, len(header_bytes)) + header_bytes)
  body += bytes(-len(body) % 64)
  return bytes(body) + hashlib.sha256(body).digest()


def test_a_deeply_nested_header_is_a_format_error():
  deep = b'{"data_nbytes": 0, "model": ' + b'[' * 100_000 + b']' * 100_000 + b'}'
  with pytest.raises(fmt.ExportFormatError, match='corrupt header'):
    fmt.from_bytes(_around_header(deep))


def test_other_model_and_other_file_are_errors(tmp_path):
  path = tmp_path / 'm.dqnn'
  fmt.save(_small_export(), path)
  with pytest.raises(fmt.ExportFormatError, match="holds model 'tiny', not the expected 'resnet18'"):
    fmt.load(path, expected_model='resnet18')
  with pytest.raises(fmt.ExportFormatError, match='not a dqnn export'):
    fmt.from_bytes(b'PK\x03\x04 a zip file')


def _conv_export():
  """A W2 1x1 conv after a 2-bit activation quantizer: every kind of header reference."""
  ops = [
      {'op': 'act_quantize', 'name': 'a', 'inputs': [0], 'output': 1, 'bits': 2, 'exact': True,
       'thresholds': 'a/thresholds', 'values': 'a/values'},
      {'op': 'conv', 'name': 'c', 'inputs': [1], 'output': 2, 'bias': 'c/bias',
       'kernel': {'bits': 2, 'shape': [1, 1, 3, 2], 'levels': 'c/levels',
                  'indices': 'c/indices'},
       'strides': [1, 1], 'padding': 'VALID', 'lhs_dilation': [1, 1], 'rhs_dilation': [1, 1],
       'feature_group_count': 1, 'dtype': 'float32'},
  ]
  tensors = {'a/thresholds': np.array([0.5, 1.5, 2.5], np.float32),
             'a/values': np.arange(4, dtype=np.float32),
             'c/levels': np.array([[-1.5, -0.5, 0.5, 1.5], [-3, -1, 1, 3]], np.float32),
             'c/indices': fmt.pack_indices(np.array([0, 1, 2, 3, 3, 0]), 2),
             'c/bias': np.array([0.25, -0.25], np.float32)}
  return fmt.ExportedModel({'model': 'tiny', 'ops': ops, 'output': 2}, tensors)


def _with_header(raw: bytes, edit) -> bytes:
  """`raw` with its header edited by `edit(header)` and lengths and checksums made consistent
  again: what a buggy writer (or an adversary) could produce."""
  header_nbytes = struct.unpack_from('<Q', raw, 12)[0]
  header = json.loads(raw[20:20 + header_nbytes])
  data_start = -(-(20 + header_nbytes) // 64) * 64
  data = raw[data_start:-32]
  edit(header)
  header_bytes = json.dumps(header).encode()
  body = bytearray(struct.pack('<8sIQ', fmt.MAGIC, fmt.VERSION, len(header_bytes)) + header_bytes)
  body += bytes(-len(body) % 64) + data
  return bytes(body) + hashlib.sha256(body).digest()


def test_every_flipped_bit_is_detected():
  raw = fmt.to_bytes(_conv_export())
  fmt.from_bytes(raw)
  for position in range(len(raw)):
    for bit in (0, 7):
      flipped = bytearray(raw)
      flipped[position] ^= 1 << bit
      with pytest.raises(fmt.ExportFormatError):
        fmt.from_bytes(bytes(flipped))


def test_flipped_index_bits_name_the_tensor():
  raw = fmt.to_bytes(_conv_export())
  header_nbytes = struct.unpack_from('<Q', raw, 12)[0]
  data_start = -(-(20 + header_nbytes) // 64) * 64
  offset = json.loads(raw[20:20 + header_nbytes])['tensors']['c/indices']['offset']
  flipped = bytearray(raw)
  flipped[data_start + offset] ^= 0b100
  with pytest.raises(fmt.ExportFormatError, match='checksum.*c/indices'):
    fmt.from_bytes(bytes(flipped))


@pytest.mark.parametrize('cut', range(1, 40))
def test_every_truncation_is_detected(cut):
  raw = fmt.to_bytes(_conv_export())
  with pytest.raises(fmt.ExportFormatError):
    fmt.from_bytes(raw[:-cut])


def _set(path, value):
  def edit(header):
    *parents, last = path
    for key in parents:
      header = header[key]
    header[last] = value
  return edit


def _delete(path):
  def edit(header):
    *parents, last = path
    for key in parents:
      header = header[key]
    del header[last]
  return edit


@pytest.mark.parametrize('edit, named', [
    (_set(('tensors', 'c/levels', 'shape'), [2, 8]), "'c/levels': nbytes"),
    (_set(('tensors', 'c/levels', 'offset'), 1), 'not a multiple of 64'),
    (_set(('tensors', 'c/levels', 'offset'), 0), 'overlaps'),
    (_set(('tensors', 'c/bias', 'offset'), 4096), 'leaves the'),
    (_set(('tensors', 'a/values', 'dtype'), 'float64'), "dtype 'float64'"),
    (_set(('tensors', 'a/values', 'shape'), 'x'), 'shape'),
    (_set(('ops', 1, 'kernel', 'bits'), 3), "'c/levels' is float32 [2, 4], expected float32 [2, 8]"),
    (_set(('ops', 1, 'kernel', 'bits'), 5), 'kernel bits 5'),
    (_set(('ops', 1, 'kernel', 'shape'), [1, 1, 3, 4]), '2 rows'),
    (_set(('ops', 1, 'kernel', 'shape'), [1, 1, 6, 2]), "'c/indices'"),
    (_set(('ops', 1, 'dtype'), 'int8'), "dtype 'int8'"),
    (_set(('ops', 0, 'bits'), 3), "'a/thresholds'"),
    (_set(('ops', 0, 'inputs'), [7]), 'before they are computed'),
    (_set(('ops', 1, 'bias'), 'nope'), "tensor 'nope'"),
    (_set(('output',), 9), 'output value 9'),
    (_set(('data_nbytes',), 'many'), 'corrupt header'),
    (_delete(('ops',)), 'lacks ops'),
    (_delete(('tensors', 'c/bias', 'sha256')), 'needs exactly'),
    (_delete(('ops', 1, 'kernel', 'levels')), 'level table'),
    (_delete(('ops', 0, 'output')), 'lacks op, inputs or output'),
])
def test_every_malformed_header_is_an_export_format_error(edit, named):
  raw = _with_header(fmt.to_bytes(_conv_export()), edit)
  with pytest.raises(fmt.ExportFormatError, match=re.escape(named)):
    fmt.from_bytes(raw)


def test_non_object_header_is_an_export_format_error():
  raw = fmt.to_bytes(_conv_export())
  body = bytearray(struct.pack('<8sIQ', fmt.MAGIC, fmt.VERSION, 2) + b'[]')
  body += bytes(-len(body) % 64)
  with pytest.raises(fmt.ExportFormatError, match='corrupt header'):
    fmt.from_bytes(bytes(body) + hashlib.sha256(body).digest())
  # The untouched file loads, and its edits above are the only difference.
  assert fmt.from_bytes(raw).header['output'] == 2


def test_version_1_files_are_refused_with_what_to_do():
  raw = bytearray(fmt.to_bytes(_small_export()))
  struct.pack_into('<I', raw, 8, 1)
  with pytest.raises(fmt.ExportFormatError, match='version 1; this dqnn reads version 2. Re-export'):
    fmt.from_bytes(bytes(raw))


def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
  path = tmp_path / 'm.dqnn'
  fmt.save(_small_export(), path)
  before = path.read_bytes()
  fill_disk_after(monkeypatch, 100)
  with pytest.raises(files.DiskFullError):
    fmt.save(_conv_export(), path)
  assert path.read_bytes() == before and os.listdir(tmp_path) == ['m.dqnn']
