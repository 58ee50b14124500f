"""Deployable export of trained dqnn models: packed level indices + level tables, one file.

  exported = export_model(config, variables)      # or export_workdir(workdir)
  save(exported, 'model.dqnn'); exported = load('model.dqnn', expected_model='resnet18')
  logits = infer(exported, images)

See docs/export_format.md.
"""
from dqnn.export.exporter import InvalidVariablesError, export_model, export_workdir
from dqnn.export.folding import fold_batch_norm
from dqnn.export.format import (ExportedModel, ExportFormatError, load, pack_indices,
                                packed_nbytes, save, unpack_indices)
from dqnn.export.graph import UnsupportedModelError
from dqnn.export.inference import infer, make_infer
from dqnn.quantizers.readout import per_channel_levels

__all__ = [
    'ExportedModel', 'ExportFormatError', 'InvalidVariablesError', 'UnsupportedModelError', 'export_model',
    'export_workdir', 'fold_batch_norm', 'infer', 'load', 'make_infer', 'pack_indices',
    'packed_nbytes', 'per_channel_levels', 'save', 'unpack_indices',
]
