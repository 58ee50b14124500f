"""Folds eval-mode BatchNorm into the conv/dense before it, where that is exact math.

A BN right after a linear layer computes `s * y + t` per output channel, with
`s = scale / sqrt(var + eps)` and `t = bias - mean * s`. With per-channel level tables the
scale multiplies each channel's levels (the kernel stays `b`-bit: same indices, new table); a
negative `s` reverses a channel's order, so its table is flipped and its indices remapped to
`L - 1 - index` to keep the table increasing. `t` (plus the layer's own bias times `s`) becomes
the layer's bias. Not folded, with the reason recorded in the header's `folded_batch_norm`:
a BN whose input is not a conv/dense output (pre-activation ResNets' `bn_preact`/`bn_last`
follow a residual add), a linear output that something else also reads, and per-tensor
(G = 1) level tables, which cannot take a different scale per channel.
"""
import copy

import numpy as np

from dqnn.export import format as fmt


def fold_batch_norm(exported: fmt.ExportedModel) -> fmt.ExportedModel:
  """A copy of `exported` with every foldable BatchNorm folded (float32 results)."""
  header = copy.deepcopy(exported.header)
  tensors = dict(exported.tensors)
  producers = {op['output']: op for op in header['ops']}
  readers = {}
  for op in header['ops']:
    for value in op['inputs']:
      readers[value] = readers.get(value, 0) + 1
  kept, report = [], {}
  for op in header['ops']:
    if op['op'] != 'batch_norm':
      kept.append(op)
      continue
    linear = producers.get(op['inputs'][0])
    reason = _cannot_fold(linear, readers, tensors)
    if reason:
      report[op['name']] = f'kept: {reason}'
      kept.append(op)
      continue
    _fold(op, linear, tensors)
    report[op['name']] = f'folded into {linear["name"]}'
  # Drop tensors no op references any more (the folded BNs' statistics).
  used = {name for op in kept for name in _tensor_names(op)}
  header['ops'] = kept
  header['folded_batch_norm'] = report
  return fmt.ExportedModel(header, {name: t for name, t in tensors.items() if name in used})


def _tensor_names(op: dict) -> list[str]:
  names = [v for k, v in op.items() if k in ('mean', 'var', 'scale', 'bias', 'thresholds',
                                             'values') and v]
  kernel = op.get('kernel', {})
  return names + [kernel[k] for k in ('float', 'levels', 'indices') if k in kernel]


def _cannot_fold(linear, readers, tensors) -> str:
  if linear is None or linear['op'] not in ('conv', 'dense'):
    return 'its input is not a conv/dense output'
  if readers[linear['output']] != 1:
    return f'the output of {linear["name"]} is read elsewhere too'
  kernel = linear['kernel']
  if 'levels' in kernel and tensors[kernel['levels']].shape[0] != kernel['shape'][-1]:
    return f'{linear["name"]} has per-tensor levels (one table, one scale)'
  return ''


def _fold(bn: dict, linear: dict, tensors: dict) -> None:
  """Rewrites `linear` in place to output the BN's result."""
  channels = linear['kernel']['shape'][-1]
  mean, var = (tensors[bn[k]].astype(np.float64) for k in ('mean', 'var'))
  gamma = tensors[bn['scale']].astype(np.float64) if bn['scale'] else np.ones(channels)
  beta = tensors[bn['bias']].astype(np.float64) if bn['bias'] else np.zeros(channels)
  scale = gamma / np.sqrt(var + bn['epsilon'])
  bias = beta - mean * scale
  if linear['bias']:
    bias = bias + tensors[linear['bias']].astype(np.float64) * scale
  name, kernel = linear['name'], linear['kernel']
  if 'float' in kernel:
    tensors[kernel['float']] = (tensors[kernel['float']] * scale).astype(np.float32)
  else:
    levels = tensors[kernel['levels']].astype(np.float64) * scale[:, None]
    flipped = scale < 0
    levels[flipped] = levels[flipped, ::-1]
    tensors[kernel['levels']] = levels.astype(np.float32)
    if flipped.any():
      count, bits = int(np.prod(kernel['shape'])), kernel['bits']
      indices = fmt.unpack_indices(tensors[kernel['indices']], count, bits).reshape(-1, channels)
      indices[:, flipped] = 2 ** bits - 1 - indices[:, flipped]
      tensors[kernel['indices']] = fmt.pack_indices(indices, bits)
  linear['bias'] = f'{name}/bias'
  tensors[linear['bias']] = bias.astype(np.float32)
  linear['output'] = bn['output']
