"""The .dqnn file: bit packing, the layout, and one clear error per broken file."""
import math
import struct

import numpy as np
import pytest

from dqnn.export import format as fmt


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


def test_other_version_is_an_error():
  raw = bytearray(fmt.to_bytes(_small_export()))
  struct.pack_into('<I', raw, 8, fmt.VERSION + 1)
  with pytest.raises(fmt.ExportFormatError, match=f'version {fmt.VERSION + 1}.*reads version'):
    fmt.from_bytes(bytes(raw))


def test_other_model_and_other_file_are_errors(tmp_path):
  path = tmp_path / 'm.dqnn'
  fmt.save(_small_export(), path)
  with pytest.raises(fmt.ExportFormatError, match="holds model 'tiny', not the expected 'resnet18'"):
    fmt.load(path, expected_model='resnet18')
  with pytest.raises(fmt.ExportFormatError, match='not a dqnn export'):
    fmt.from_bytes(b'PK\x03\x04 a zip file')
