r"""Exports a trained run as a deployable `.dqnn` file (packed indices + level tables).

  python -m dqnn.export --workdir=/tmp/dqnn/r20_w2a2 --out=r20_w2a2.dqnn [--fold_batch_norm]

Reads the run's config.json and latest checkpoint; prints the file size and what was folded.
"""
from absl import app
from absl import flags

from dqnn import checkpoint
from dqnn import export
from dqnn import files

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory (config + checkpoints).')
_OUT = flags.DEFINE_string('out', None, 'Path of the .dqnn file to write.')
_FOLD = flags.DEFINE_bool('fold_batch_norm', False,
                          'Fold BatchNorm into per-channel level tables where exact.')
flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  try:
    exported = export.export_workdir(_WORKDIR.value, fold_batch_norm=_FOLD.value)
    size = export.save(exported, _OUT.value)
  except (FileNotFoundError, export.UnsupportedModelError, export.InvalidVariablesError,
          checkpoint.CorruptCheckpointError, files.DiskFullError) as error:
    raise SystemExit(f'ERROR: {error}') from None
  print(f'Wrote {_OUT.value}: model {exported.model}, {size:,} bytes, '
        f'{len(exported.header["ops"])} ops.')
  for name, outcome in exported.header['folded_batch_norm'].items():
    print(f'  {name}: {outcome}')


if __name__ == '__main__':
  app.run(main)
