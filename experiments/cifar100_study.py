r"""CIFAR-100 accuracy study: float ResNet-20, then quantized fine-tunes with DQ and baselines.

    python -m experiments.cifar100_study --data_dir=/work/tfds [--workers=2] [--only=a,b]

Run from the repository root, with the CIFAR-100 split prepared by
`python -m dqnn.data.prepare --source=npz --input=../shared/data/cifar100/train.npz
--data_dir=/work/tfds` (train = 45,000 images, test = the file's first 50 images per class, a
held-out carve, not the official test set).

One float ResNet-20 is trained first; every quantized row then starts from it and fine-tunes for
the same number of steps, with the same learning rate, data and seed, so rows differ only in the
quantizer settings they name. Runs are resumable: a finished row is skipped, an interrupted one
resumes from its last checkpoint. Each run's workdir lives under `--runs_dir` (checkpoints stay
there); its config, metrics and summary are copied to `experiments/cifar100_study/<row>/` and
the table is rewritten to `experiments/cifar100_study/results.md` after every row.

`--workers=2` runs two fine-tunes at once, each pinned to one core: on a 2-core machine that
gives about 1.3x the throughput of one run on both cores (XLA's CPU convolutions scale poorly
from one thread to two).
"""
import argparse
import collections
import dataclasses
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from configs import base
from experiments import scheduler

ROOT = Path(__file__).resolve().parents[1]
RECORD_DIR = ROOT / 'experiments' / 'cifar100_study'  # Default of --record_dir.
SUMMARY = 'summary.json'

# The schedule every row shares. Small on purpose: it fits a 2-core CPU in about two hours.
FLOAT_EPOCHS = 3
FINE_TUNE_STEPS = 200
FINE_TUNE_LR = 0.01  # Cosine from here to 0 over FINE_TUNE_STEPS, at batch 128.


@dataclasses.dataclass(frozen=True)
class Row:
  """One run: a config file plus overrides (dotted config paths), fine-tuned from `init_from`."""
  name: str
  description: str
  config_file: str
  overrides: dict = dataclasses.field(default_factory=dict)
  seed: int = 0
  init_from: str = 'fp'

  @property
  def cell(self) -> str:
    """The row name without its seed: seeds of one cell are averaged in the table."""
    return self.name.removesuffix(f'_s{self.seed}')


def _methods(bits: str, seeds=(0,)):
  methods = (('dq', 'DQ (weights and activations; defaults)', 'dq', 'dq'),
             ('lqnets', 'LQ-Nets (latent weights, pooled closed-form activations)', 'lqnets',
              'lqnets'),
             ('lsq', 'LSQ (latent weights, learned step sizes)', 'lsq', 'lsq'))
  return [Row(f'{bits}_{key}_s{seed}', f'{bits.upper()} {text}',
              f'configs/cifar100_resnet20_{bits}.py',
              {'quant.weight_quantizer': w, 'quant.act_quantizer': a}, seed=seed)
          for seed in seeds for key, text, w, a in methods]


W2A2 = 'configs/cifar100_resnet20_w2a2.py'
# The DQ ablations below ran when gradient-trained activation levels were DQ's default (before
# this study chose closed form); they name that setting, so each compares with
# `w2a2_dq_gradient_acts`.
GRADIENT_ACTS = {'update': 'gradient'}
# In priority order: the rows the study cannot do without come first.
ROWS = ([Row('fp', 'Float ResNet-20 (the starting point of every other row)',
             'configs/cifar100_resnet20_fp.py', {'num_epochs': FLOAT_EPOCHS}, init_from='')]
        + _methods('w2a2', seeds=(0, 1))
        + [Row(f'w2a2_dq_gradient_acts_s{seed}', 'W2A2 DQ, activation levels by gradient', W2A2,
               {'quant.act_options': GRADIENT_ACTS}, seed=seed) for seed in (0, 1)]
        + [Row(f'w2a2_dq_pooled_acts_s{seed}',
               'W2A2 DQ weights + pooled activation error (gradient act levels)', W2A2,
               {'quant.act_options': {**GRADIENT_ACTS, 'weighting': 'pooled'}}, seed=seed)
           for seed in (0, 1)]
        + [Row('w2a2_lqnets_weights_dq_acts_s0',
               'W2A2 latent (LQ-Nets) weights + DQ activations (gradient act levels)', W2A2,
               {'quant.weight_quantizer': 'lqnets', 'quant.act_options': GRADIENT_ACTS}),
           Row('w2a2_dq_no_residual_s0',
               'W2A2 DQ, residual=False (index rounded every step; gradient act levels)', W2A2,
               {'optimizer.residual': False, 'quant.act_options': GRADIENT_ACTS}),
           Row('w2a2_dq_lloyd_s0', 'W2A2 DQ, level_update=lloyd (gradient act levels)', W2A2,
               {'optimizer.level_update': 'lloyd', 'quant.act_options': GRADIENT_ACTS}),
           Row('w2a2_dorefa_pact_s0', 'W2A2 DoReFa weights + PACT activations', W2A2,
               {'quant.weight_quantizer': 'dorefa', 'quant.act_quantizer': 'pact'})]
        + _methods('w3a3') + _methods('w4a4'))
ROWS_BY_NAME = {row.name: row for row in ROWS}


def _set(config, dotted: str, value) -> None:
  *parents, leaf = dotted.split('.')
  for key in parents:
    config = config[key]
  config[leaf] = value


def build_config(row: Row, data_dir: str, runs_dir: Path, runlocal: bool = False):
  """The row's ConfigDict: its config file, the study's schedule, then the row's overrides.

  `runlocal` shrinks it as `configs/x.py:runlocal` does (tiny model, a few steps): a smoke run.
  """
  config = importlib.import_module(row.config_file[:-3].replace('/', '.')).get_config()
  config.data_dir = data_dir
  config.download = False
  config.seed = row.seed
  config.eval_every_steps = 0  # Evaluate once, at the end.
  config.log_every_steps = 50
  config.checkpoint_every_steps = 100
  config.keep_checkpoints = 1
  config.weight_images = False
  if row.init_from:
    config.init_from = str(runs_dir / row.init_from)
    config.num_train_steps = FINE_TUNE_STEPS
    config.optimizer.learning_rate = FINE_TUNE_LR
  for dotted, value in row.overrides.items():
    _set(config, dotted, value)
  return base.runlocal(config) if runlocal else config


def run_one(row: Row, data_dir: str, runs_dir: Path, record_dir: Path,
            runlocal: bool = False) -> None:
  """Trains (or resumes) one row in this process and records it in `record_dir/<row>/`."""
  from dqnn import train  # Imported here so that the parent process never starts JAX.
  config = build_config(row, data_dir, runs_dir, runlocal)
  workdir = runs_dir / row.name
  start = time.monotonic()
  final = train.train_and_evaluate(config, str(workdir))
  wall = time.monotonic() - start
  previous = workdir / 'wall_s'
  total_wall = wall + (float(previous.read_text()) if previous.exists() else 0.0)
  previous.write_text(f'{total_wall:.1f}')
  record = record_dir / row.name
  record.mkdir(parents=True, exist_ok=True)
  for name in ('config.json', 'metrics.jsonl'):
    shutil.copy(workdir / name, record / name)
  evals = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  last_eval = [r for r in evals if r['split'] == 'eval'][-1]
  summary = {'row': row.name, 'description': row.description, 'config_file': row.config_file,
             'overrides': row.overrides, 'seed': row.seed, 'init_from': row.init_from,
             'steps': final['step'], 'eval_top1': last_eval['top1'],
             'eval_loss': last_eval['loss'], 'wall_s': round(total_wall, 1),
             'command': f'python -m experiments.cifar100_study --data_dir=<tfds dir> '
                        f'--only={row.name}'}
  (record / SUMMARY).write_text(json.dumps(summary, indent=1) + '\n')


def _done(row: Row, record_dir: Path) -> bool:
  return (record_dir / row.name / SUMMARY).exists()


def _spawn(row: Row, args, cores: set[int] | None) -> subprocess.Popen:
  command = [sys.executable, '-m', 'experiments.cifar100_study', f'--data_dir={args.data_dir}',
             f'--runs_dir={args.runs_dir}', f'--record_dir={args.record_dir}',
             f'--run_one={row.name}'] + (['--runlocal'] if args.runlocal else [])
  return scheduler.spawn(command, cwd=ROOT, log_path=scheduler.log_path(args.runs_dir, row.name),
                         cores=cores)


def run_study(args) -> None:
  """Runs every pending row: a run from scratch alone on every core, fine-tunes one per core."""
  runs_dir, record_dir = Path(args.runs_dir), Path(args.record_dir)
  runs_dir.mkdir(parents=True, exist_ok=True)
  wanted = [ROWS_BY_NAME[name] for name in args.only.split(',')] if args.only else ROWS
  pending = [row for row in wanted if not _done(row, record_dir)]
  left = scheduler.run(
      [scheduler.Job(row.name, (row.init_from,) if row.init_from else (),
                     exclusive=not row.init_from) for row in pending],
      slots=scheduler.core_slots(args.workers, pin=args.workers > 1),
      is_done=lambda name: _done(ROWS_BY_NAME[name], record_dir),
      start=lambda job, cores: _spawn(ROWS_BY_NAME[job.name], args, cores),
      on_done=lambda job: write_table(record_dir),
      log_path=lambda job: scheduler.log_path(runs_dir, job.name))
  if left:
    raise SystemExit(f'Rows not recorded: {[job.name for job in left]}; see their logs in '
                     f'{runs_dir}. Run the same command again to retry them.')


def write_table(record_dir: Path) -> str:
  """Rewrites results.md from every recorded row; seeds of one cell give mean and range."""
  cells = collections.OrderedDict()
  for row in ROWS:
    if _done(row, record_dir):
      summary = json.loads((record_dir / row.name / SUMMARY).read_text())
      cells.setdefault(row.cell, []).append(summary)
  lines = [
      '# CIFAR-100 study: results table (written by experiments/cifar100_study.py)', '',
      f'ResNet-20; float trained {FLOAT_EPOCHS} epochs (lr 0.1 cosine, batch 128, wd 5e-4), then '
      f'every quantized row fine-tuned from it for {FINE_TUNE_STEPS} steps (lr {FINE_TUNE_LR} '
      'cosine, batch 128, wd 5e-4); first conv and last layer float; quantizer variables the '
      'float model lacks (activation ranges, LSQ steps) are fitted on the first batch with the '
      'float weights in place (dqnn/warm_start.py). Data: train 45,000 / '
      'held-out 5,000 images carved from `../shared/data/cifar100/train.npz` (not the official '
      'test set). Top-1 on the held-out 5,000. Seeds change the fine-tune data order only (all '
      'rows start from the same float run). Hardware: see docs/results.md.', '',
      '| cell | description | seeds | held-out top-1 % (mean; min–max) | steps | wall min/run |',
      '| --- | --- | ---: | ---: | ---: | ---: |']
  for cell, runs in cells.items():
    accuracies = [100 * run['eval_top1'] for run in runs]
    mean = statistics.mean(accuracies)
    spread = (f'{mean:.2f}; {min(accuracies):.2f}–{max(accuracies):.2f}' if len(runs) > 1
              else f'{mean:.2f}')
    wall = statistics.mean(run['wall_s'] for run in runs) / 60
    lines.append(f'| `{cell}` | {runs[0]["description"]} | {len(runs)} | {spread} | '
                 f'{runs[0]["steps"]} | {wall:.1f} |')
  text = '\n'.join(lines) + '\n'
  record_dir.mkdir(parents=True, exist_ok=True)
  (record_dir / 'results.md').write_text(text)
  return text


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data_dir', default=os.environ.get('TFDS_DATA_DIR', ''),
                      help='TFDS directory holding the prepared cifar100.')
  parser.add_argument('--runs_dir', default=str(ROOT / 'runs' / 'cifar100_study'),
                      help='Workdirs (checkpoints) of the runs; not committed.')
  parser.add_argument('--record_dir', default=str(RECORD_DIR),
                      help="Each row's config, metrics and summary, and results.md.")
  parser.add_argument('--runlocal', action='store_true',
                      help='Tiny model and a few steps per row: a smoke run of the study.')
  parser.add_argument('--workers', type=int, default=min(2, len(os.sched_getaffinity(0))))
  parser.add_argument('--only', default='', help='Comma-separated row names (default: all).')
  parser.add_argument('--table', action='store_true', help='Only rewrite results.md.')
  parser.add_argument('--run_one', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  # Absolute: the rows' configs record these paths, which later calls read back from anywhere.
  for name in ('data_dir', 'runs_dir', 'record_dir'):
    if getattr(args, name):
      setattr(args, name, str(Path(getattr(args, name)).resolve()))
  unknown = [n for n in args.only.split(',') if n and n not in ROWS_BY_NAME]
  if unknown:
    raise SystemExit(f'Unknown rows {unknown}; choose from {list(ROWS_BY_NAME)}.')
  if args.run_one:
    run_one(ROWS_BY_NAME[args.run_one], args.data_dir, Path(args.runs_dir),
            Path(args.record_dir), args.runlocal)
  elif args.table:
    print(write_table(Path(args.record_dir)))
  else:
    run_study(args)
    print(write_table(Path(args.record_dir)))


if __name__ == '__main__':
  main()
