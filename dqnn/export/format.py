"""The `.dqnn` file: magic, version, a JSON header, 64-byte-aligned binary blobs, a sha256.

See docs/export_format.md for the layout and the bit packing. `save`/`load` move an
`ExportedModel` (header dict + named numpy arrays) to and from that file; `pack_indices` /
`unpack_indices` are the b-bit index packing.
"""
import dataclasses
import hashlib
import json
import math
import os
import struct
from typing import Any

import numpy as np

from dqnn import files
from dqnn.quantizers.bits import SUPPORTED_BITS

MAGIC = b'\x89DQNN\r\n\x1a'
# Version 2 added the per-tensor sha256 and the file's sha256 trailer; version 1 is refused.
VERSION = 2
ALIGNMENT = 64
PACKABLE_BITS = SUPPORTED_BITS  # Every quantized bit width packs.
# Magic, then little-endian uint32 version and uint64 header length.
_PREAMBLE = struct.Struct('<8sIQ')
_DTYPES = ('float32', 'uint8', 'int32')
_COMPUTE_DTYPES = ('float32', 'bfloat16', 'float16')
_HEADER_KEYS = ('model', 'ops', 'output', 'tensors', 'data_nbytes')
# The file ends with the sha256 of every byte before it.
_CHECKSUM_NBYTES = 32


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


def _sha256(data) -> str:
  return hashlib.sha256(data).hexdigest()


def to_bytes(exported: ExportedModel) -> bytes:
  """The file's bytes; tensor offsets are relative to the (aligned) start of the data section."""
  tensors, blobs, offset = {}, [], 0
  for name, array in exported.tensors.items():
    array = np.ascontiguousarray(array)
    if array.dtype.name not in _DTYPES:
      raise ValueError(f'Tensor {name!r} has dtype {array.dtype}; exportable: {_DTYPES}.')
    offset = _align(offset)
    blob = array.astype(array.dtype.newbyteorder('<')).tobytes()
    tensors[name] = {'dtype': array.dtype.name, 'shape': list(array.shape), 'offset': offset,
                     'nbytes': array.nbytes, 'sha256': _sha256(blob)}
    blobs.append((offset, blob))
    offset += array.nbytes
  header = {**exported.header, 'tensors': tensors, 'data_nbytes': offset}
  header_bytes = json.dumps(header, sort_keys=True).encode('utf-8')
  data_start = _align(_PREAMBLE.size + len(header_bytes))
  out = bytearray(data_start + offset)
  out[:_PREAMBLE.size] = _PREAMBLE.pack(MAGIC, VERSION, len(header_bytes))
  out[_PREAMBLE.size:_PREAMBLE.size + len(header_bytes)] = header_bytes
  for blob_offset, blob in blobs:
    out[data_start + blob_offset:data_start + blob_offset + len(blob)] = blob
  return bytes(out) + hashlib.sha256(out).digest()


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _check_tensor_table(tensors, data_nbytes: int) -> None:
  """Each entry's dtype, shape, offset and size agree, and the blobs fit the data section."""
  if not isinstance(tensors, dict):
    raise ValueError("'tensors' is not an object")
  end = 0
  for name, meta in tensors.items():
    if not isinstance(meta, dict) or set(meta) != {'dtype', 'shape', 'offset', 'nbytes',
                                                   'sha256'}:
      raise ValueError(f'tensor {name!r} needs exactly dtype, shape, offset, nbytes, sha256')
    shape, offset = meta['shape'], meta['offset']
    if meta['dtype'] not in _DTYPES:
      raise ValueError(f'tensor {name!r} has dtype {meta["dtype"]!r}; known: {_DTYPES}')
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
      raise ValueError(f'tensor {name!r} has shape {shape!r}')
    if meta['nbytes'] != math.prod(shape) * np.dtype(meta['dtype']).itemsize:
      raise ValueError(f'tensor {name!r}: nbytes {meta["nbytes"]!r} does not fit shape {shape} '
                       f'of {meta["dtype"]}')
    if not _is_int(offset) or offset % ALIGNMENT:
      raise ValueError(f'tensor {name!r} has offset {offset!r}, not a multiple of {ALIGNMENT}')
  # Blobs in offset order: none may overlap the previous or run past the data section.
  for name, meta in sorted(tensors.items(), key=lambda item: item[1]['offset']):
    if meta['offset'] < end or meta['offset'] + meta['nbytes'] > data_nbytes:
      raise ValueError(f'tensor {name!r} at [{meta["offset"]}, '
                       f'{meta["offset"] + meta["nbytes"]}) overlaps another or leaves the '
                       f'{data_nbytes}-byte data section')
    end = meta['offset'] + meta['nbytes']


def _check_tensor(tensors, name, dtype: str, shape: tuple[int, ...] | None, where: str) -> None:
  if not isinstance(name, str) or name not in tensors:
    raise ValueError(f'{where} names tensor {name!r}, which the file does not hold')
  meta = tensors[name]
  if meta['dtype'] != dtype or (shape is not None and tuple(meta['shape']) != shape):
    raise ValueError(f'{where}: tensor {name!r} is {meta["dtype"]} {meta["shape"]}, expected '
                     f'{dtype} {list(shape) if shape is not None else "(any shape)"}')


def _check_kernel(kernel, tensors, where: str) -> None:
  if not isinstance(kernel, dict) or not isinstance(kernel.get('shape'), list) or not all(
      _is_int(d) and d > 0 for d in kernel['shape']):
    raise ValueError(f'{where} has a malformed kernel {kernel!r:.80}')
  shape = tuple(kernel['shape'])
  if 'float' in kernel:
    _check_tensor(tensors, kernel['float'], 'float32', shape, where)
    return
  bits = kernel.get('bits')
  if bits not in PACKABLE_BITS:
    raise ValueError(f'{where} has kernel bits {bits!r}; packable: {PACKABLE_BITS}')
  levels = tensors.get(kernel.get('levels'), {}).get('shape', [None])
  if levels[0] not in (1, shape[-1]):
    raise ValueError(f'{where}: level table {kernel.get("levels")!r} has {levels[0]} rows; '
                     f'expected 1 or {shape[-1]}')
  _check_tensor(tensors, kernel['levels'], 'float32', (levels[0], 2 ** bits), where)
  _check_tensor(tensors, kernel.get('indices'), 'uint8',
                (packed_nbytes(math.prod(shape), bits),), where)


def _check_ops(header, tensors) -> None:
  """Every op reads values defined before it and tensors the file holds, of fitting shapes."""
  ops, defined = header['ops'], {0}
  if not isinstance(ops, list):
    raise ValueError("'ops' is not a list")
  for position, op in enumerate(ops):
    if (not isinstance(op, dict) or not isinstance(op.get('op'), str)
        or not isinstance(op.get('inputs'), list) or not _is_int(op.get('output'))):
      raise ValueError(f'op {position} lacks op, inputs or output')
    where = f'op {position} ({op["op"]})'
    if any(i not in defined for i in op['inputs']):
      raise ValueError(f'{where} reads value(s) {op["inputs"]} before they are computed')
    defined.add(op['output'])
    if 'dtype' in op and op['dtype'] not in _COMPUTE_DTYPES:
      raise ValueError(f'{where} has dtype {op["dtype"]!r}; known: {_COMPUTE_DTYPES}')
    if 'kernel' in op:
      _check_kernel(op['kernel'], tensors, where)
    for field in ('bias', 'mean', 'var', 'scale'):
      if op.get(field) is not None:
        _check_tensor(tensors, op[field], 'float32', None, where)
    if op['op'] == 'act_quantize':
      if op.get('bits') not in range(1, 9):
        raise ValueError(f'{where} has bits {op.get("bits")!r}')
      levels = 2 ** op['bits']
      _check_tensor(tensors, op.get('thresholds'), 'float32', (levels - 1,), where)
      _check_tensor(tensors, op.get('values'), 'float32', (levels,), where)
  if header['output'] not in defined:
    raise ValueError(f'output value {header["output"]!r} is not computed by any op')


def _check_header(header) -> None:
  if not isinstance(header, dict):
    raise ValueError('it is not a JSON object')
  missing = [key for key in _HEADER_KEYS if key not in header]
  if missing:
    raise ValueError(f'it lacks {", ".join(missing)}')
  if not _is_int(header['data_nbytes']) or header['data_nbytes'] < 0:
    raise ValueError(f'data_nbytes is {header["data_nbytes"]!r}')
  if not isinstance(header['model'], str) or not _is_int(header['output']):
    raise ValueError('model or output is malformed')
  _check_tensor_table(header['tensors'], header['data_nbytes'])
  _check_ops(header, header['tensors'])


def from_bytes(raw: bytes, *, expected_model: str | None = None,
               source: str = '<bytes>') -> ExportedModel:
  """Parses and verifies a file's bytes; raises one `ExportFormatError` saying what is wrong."""
  if not raw or raw[:len(MAGIC)] != MAGIC[:len(raw)]:
    raise ExportFormatError(f'{source} is not a dqnn export (bad magic bytes).')
  if len(raw) < _PREAMBLE.size:
    raise ExportFormatError(f'{source} is truncated: {len(raw)} bytes, inside the preamble.')
  _, version, header_nbytes = _PREAMBLE.unpack_from(raw)
  if version > VERSION:
    raise ExportFormatError(f'{source} is dqnn export format version {version}, written by a '
                            f'newer dqnn; this dqnn reads version {VERSION}. Upgrade dqnn to '
                            'load it.')
  if version != VERSION:
    raise ExportFormatError(f'{source} is dqnn export format version {version}; this dqnn '
                            f'reads version {VERSION}. Re-export it with this version.')
  header_end = _PREAMBLE.size + header_nbytes
  if len(raw) < header_end:
    raise ExportFormatError(f'{source} is truncated: {len(raw)} bytes, but its header alone '
                            f'ends at byte {header_end}.')
  try:
    header = json.loads(raw[_PREAMBLE.size:header_end].decode('utf-8'))
    if not isinstance(header, dict) or not _is_int(header.get('data_nbytes')):
      raise ValueError('no integer data_nbytes')
  except (UnicodeDecodeError, ValueError, RecursionError) as error:
    # A header nested deeper than Python's recursion limit is no header dqnn writes.
    raise ExportFormatError(f'{source} has a corrupt header: {_first_line(error)}.') from None
  expected_nbytes = _align(header_end) + header['data_nbytes'] + _CHECKSUM_NBYTES
  if len(raw) != expected_nbytes:
    raise ExportFormatError(f'{source} is truncated or corrupt: {len(raw)} bytes, but its '
                            f'header describes {expected_nbytes}.')
  if hashlib.sha256(raw[:-_CHECKSUM_NBYTES]).digest() != raw[-_CHECKSUM_NBYTES:]:
    raise ExportFormatError(f'{source} is corrupt: its checksum does not match its contents '
                            f'({_corrupt_part(raw, header, _align(header_end))}). Export the '
                            'model again.')
  try:
    _check_header(header)
  except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
    raise ExportFormatError(f'{source} has a malformed header: {_first_line(error)}.') from None
  if expected_model is not None and header['model'] != expected_model:
    raise ExportFormatError(f'{source} holds model {header["model"]!r}, not the expected '
                            f'{expected_model!r}.')
  tensors = {}
  data_start = _align(header_end)
  for name, meta in header.pop('tensors').items():
    start = data_start + meta['offset']
    dtype = np.dtype(meta['dtype']).newbyteorder('<')
    tensors[name] = np.frombuffer(raw[start:start + meta['nbytes']], dtype).reshape(meta['shape'])
  header.pop('data_nbytes')
  return ExportedModel(header, tensors)


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _corrupt_part(raw: bytes, header: dict[str, Any], data_start: int) -> str:
  """Names the tensors whose bytes differ from their recorded hash, else the header."""
  try:
    corrupt = [name for name, meta in header['tensors'].items()
               if _sha256(raw[data_start + meta['offset']:
                              data_start + meta['offset'] + meta['nbytes']]) != meta['sha256']]
  except (TypeError, KeyError, AttributeError):
    corrupt = []
  return f'tensor(s) {", ".join(corrupt)}' if corrupt else 'the header or padding'


def save(exported: ExportedModel, path: str | os.PathLike) -> int:
  """Writes `exported` to `path` (atomically: a temporary file, then a rename); returns bytes."""
  raw = to_bytes(exported)
  files.atomic_write_bytes(path, raw)
  return len(raw)


def load(path: str | os.PathLike, *, expected_model: str | None = None) -> ExportedModel:
  """Reads a `.dqnn` file; with `expected_model`, a file of another model is an error."""
  with open(path, 'rb') as f:
    raw = f.read()
  return from_bytes(raw, expected_model=expected_model, source=str(path))
