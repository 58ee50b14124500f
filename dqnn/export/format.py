"""The `.dqnn` file: magic, version, a JSON header, then 64-byte-aligned binary blobs.

See docs/export_format.md for the layout and the bit packing. `save`/`load` move an
`ExportedModel` (header dict + named numpy arrays) to and from that file; `pack_indices` /
`unpack_indices` are the b-bit index packing.
"""
import dataclasses
import json
import os
import struct
from typing import Any

import numpy as np

MAGIC = b'\x89DQNN\r\n\x1a'
VERSION = 1
ALIGNMENT = 64
PACKABLE_BITS = (1, 2, 3, 4, 8)
# Magic, then little-endian uint32 version and uint64 header length.
_PREAMBLE = struct.Struct('<8sIQ')
_DTYPES = ('float32', 'uint8', 'int32')


class ExportFormatError(ValueError):
  """A file is not a loadable dqnn export (truncated, another version, another model...)."""


@dataclasses.dataclass
class ExportedModel:
  """A deployable model: `header` (model, config, op list; JSON-able) and `tensors` by name."""
  header: dict[str, Any]
  tensors: dict[str, np.ndarray]

  @property
  def model(self) -> str:
    return self.header['model']


def packed_nbytes(count: int, bits: int) -> int:
  """Bytes that `count` `bits`-bit indices take: `ceil(count * bits / 8)`."""
  return -(-count * bits // 8)


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
  """Packs non-negative integers `< 2**bits` into a dense little-endian bit stream (uint8).

  Index `i` occupies stream bits `[i*bits, (i+1)*bits)`, least significant bit first; stream
  bit `k` is bit `k % 8` (value `1 << (k % 8)`) of byte `k // 8`. 3-bit indices straddle bytes.
  """
  if bits not in PACKABLE_BITS:
    raise ValueError(f'Indices pack to {PACKABLE_BITS} bits; got {bits}.')
  flat = np.asarray(indices).reshape(-1).astype(np.int64)
  if flat.size and (flat.min() < 0 or flat.max() >= 2 ** bits):
    raise ValueError(f'Indices must lie in [0, {2 ** bits}) for {bits} bits.')
  stream = (flat[:, None] >> np.arange(bits)) & 1
  return np.packbits(stream.astype(np.uint8).reshape(-1), bitorder='little')


def unpack_indices(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
  """The `count` indices `pack_indices` packed, as int32."""
  stream = np.unpackbits(np.asarray(packed, np.uint8), count=count * bits, bitorder='little')
  return (stream.reshape(count, bits).astype(np.int32) << np.arange(bits)).sum(-1, dtype=np.int32)


def _align(offset: int) -> int:
  return -(-offset // ALIGNMENT) * ALIGNMENT


def to_bytes(exported: ExportedModel) -> bytes:
  """The file's bytes; tensor offsets are relative to the (aligned) start of the data section."""
  tensors, blobs, offset = {}, [], 0
  for name, array in exported.tensors.items():
    array = np.ascontiguousarray(array)
    if array.dtype.name not in _DTYPES:
      raise ValueError(f'Tensor {name!r} has dtype {array.dtype}; exportable: {_DTYPES}.')
    offset = _align(offset)
    tensors[name] = {'dtype': array.dtype.name, 'shape': list(array.shape), 'offset': offset,
                     'nbytes': array.nbytes}
    blobs.append((offset, array.astype(array.dtype.newbyteorder('<')).tobytes()))
    offset += array.nbytes
  header = {**exported.header, 'tensors': tensors, 'data_nbytes': offset}
  header_bytes = json.dumps(header, sort_keys=True).encode('utf-8')
  data_start = _align(_PREAMBLE.size + len(header_bytes))
  out = bytearray(data_start + offset)
  out[:_PREAMBLE.size] = _PREAMBLE.pack(MAGIC, VERSION, len(header_bytes))
  out[_PREAMBLE.size:_PREAMBLE.size + len(header_bytes)] = header_bytes
  for blob_offset, blob in blobs:
    out[data_start + blob_offset:data_start + blob_offset + len(blob)] = blob
  return bytes(out)


def from_bytes(raw: bytes, *, expected_model: str | None = None,
               source: str = '<bytes>') -> ExportedModel:
  """Parses a file's bytes; raises one `ExportFormatError` saying what is wrong."""
  if not raw or raw[:len(MAGIC)] != MAGIC[:len(raw)]:
    raise ExportFormatError(f'{source} is not a dqnn export (bad magic bytes).')
  if len(raw) < _PREAMBLE.size:
    raise ExportFormatError(f'{source} is truncated: {len(raw)} bytes, inside the preamble.')
  _, version, header_nbytes = _PREAMBLE.unpack_from(raw)
  if version != VERSION:
    raise ExportFormatError(f'{source} is dqnn export format version {version}; this dqnn '
                            f'reads version {VERSION}. Re-export it with this version.')
  header_end = _PREAMBLE.size + header_nbytes
  if len(raw) < header_end:
    raise ExportFormatError(f'{source} is truncated: {len(raw)} bytes, but its header alone '
                            f'ends at byte {header_end}.')
  try:
    header = json.loads(raw[_PREAMBLE.size:header_end].decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise ExportFormatError(f'{source} has a corrupt header: {error}.') from None
  data_start = _align(header_end)
  if len(raw) < data_start + header['data_nbytes']:
    raise ExportFormatError(f'{source} is truncated: {len(raw)} bytes, expected '
                            f'{data_start + header["data_nbytes"]}.')
  if expected_model is not None and header['model'] != expected_model:
    raise ExportFormatError(f'{source} holds model {header["model"]!r}, not the expected '
                            f'{expected_model!r}.')
  tensors = {}
  for name, meta in header.pop('tensors').items():
    start = data_start + meta['offset']
    dtype = np.dtype(meta['dtype']).newbyteorder('<')
    tensors[name] = np.frombuffer(raw[start:start + meta['nbytes']], dtype).reshape(meta['shape'])
  header.pop('data_nbytes')
  return ExportedModel(header, tensors)


def save(exported: ExportedModel, path: str | os.PathLike) -> int:
  """Writes `exported` to `path` (atomically: a temporary file, then a rename); returns bytes."""
  raw = to_bytes(exported)
  partial = f'{path}.partial'
  with open(partial, 'wb') as f:
    f.write(raw)
  os.replace(partial, path)
  return len(raw)


def load(path: str | os.PathLike, *, expected_model: str | None = None) -> ExportedModel:
  """Reads a `.dqnn` file; with `expected_model`, a file of another model is an error."""
  with open(path, 'rb') as f:
    raw = f.read()
  return from_bytes(raw, expected_model=expected_model, source=str(path))
