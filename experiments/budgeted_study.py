r"""CIFAR-100 study at a chosen scale: float, then {DQ, LQ-Nets, LSQ} x {from scratch, fine-tuned
from the float run} x seeds, with every compared cell's mean and seed range.

    python -m experiments.budgeted_study --scale=cpu --npz=../shared/data/cifar100/train.npz
    python -m experiments.budgeted_study --scale=cpu_medium --npz=../shared/data/cifar100/train.npz
    python -m experiments.budgeted_study --scale=gpu --npz=../shared/data/cifar100/train.npz \
        --workers=4

Run from the repository root. `--scale` picks the size (`SCALES`: training images per class,
epochs, batch, seeds); the code and the recipes are the same at every scale. `--float_epochs`,
`--fine_tune_epochs`, `--scratch_epochs`, `--train_per_class`, `--batch_size` and `--seeds`
change one number of the scale (an epoch budget); `--time_budget_min` stops the study after that
many minutes, checkpointing the runs in flight (a time budget). Runs resume: a finished row is
skipped, an interrupted one continues from its last checkpoint, so calling the command again
carries on.

Data: the training images are a class-balanced subset of the train split that
`dqnn.data.prepare` carves from `--npz`: after the first 50 images of each class (the held-out
`test` split, 5,000 images, the same at every scale), the next `train_per_class` of each class.
The study prepares it once under `--runs_dir`. The held-out split is carved from the CIFAR-100
training file: it is not the official test set.

The `distill` group fine-tunes W2A2 DQ, LQ-Nets and LSQ (and DQ at W2A1 and W3A3) with a
float teacher (`config.distill`, label-free at temperature 1 as N2UQ, and DQ once mixed with the
labels): the float ResNet-20 of the same seed, which each fine-tune also starts from, and a float
ResNet-56 (about 3x its flops and parameters). Their no-teacher pairs are the `fine_tune` and
`claims` groups' rows: run `--groups=fine_tune,claims,distill` to compare.

Each row is a plain config file plus overrides (`Row.overrides`, dotted config paths). Each
row's workdir lives under `--runs_dir` (checkpoints stay there); its config, metrics and summary
are copied to `<record_dir>/<row>/`, and `<record_dir>/results.md` (the table with mean and
range per cell and which differences lie outside the seed ranges) is rewritten after every row.

`--workers=K` runs K rows at once (`experiments.scheduler`). With a `cpu` scale each is pinned
to its own cores; otherwise they share the accelerator, each allowed 1/K of its memory.
"""
import argparse
import collections
import dataclasses
import fcntl
import functools
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
RECORD_ROOT = ROOT / 'experiments' / 'budgeted_study'  # Records go to RECORD_ROOT/<scale>.
SUMMARY = 'summary.json'
SCALE_FILE = 'scale.json'
HOLDOUT_PER_CLASS = 50  # The held-out split: the first 50 images of every class.
NUM_CLASSES = 100
# A run stopped by --time_budget_min (checkpointed) exits with this; the study resumes it later.
STOPPED_EARLY = 3

FLOAT_CONFIG = 'configs/cifar100_resnet20_fp.py'
W2A2_CONFIG = 'configs/cifar100_resnet20_w2a2.py'
# Depthwise convolutions, where channel scales differ most: DQ's per-channel error there.
MOBILENET_FLOAT_CONFIG = 'configs/cifar100_mobilenetv2_fp.py'
MOBILENET_W2A2_CONFIG = 'configs/cifar100_mobilenetv2_w2a2.py'
# No BatchNorm before any quantizer: ResNet-20 without normalization (SkipInit).
NO_BN_MODEL = {'model': 'cifar_resnet20_no_bn'}
# DQ's activation error weightings the claims compare: cell infix, description, act_options.
# Floored: channel weights 1 / (energy + mean energy), relative error for channels above the
# mean energy and absolute below it, so near-empty channels cannot pull the levels down.
WEIGHTINGS = (('', 'per-channel activation error (DQ)', {}),
              ('_pooled', 'pooled activation error', {'weighting': 'pooled'}),
              ('_eps1', 'channel weights floored at the mean channel energy (eps=1)',
               {'eps': 1.0}),
              ('_rms', 'channel weights by RMS (between per-channel and pooled)',
               {'weighting': 'rms'}))
# Training batches whose statistics replace BatchNorm's running averages after the last step.
BN_REESTIMATION_BATCHES = 50
# Mixed precision: candidate bits per layer (weights and activations) and the eval batches
# each layer's sensitivity is measured on (of the held-out split, which top-1 is reported on).
MIXED_BITS = (1, 2, 3, 4)
# The weight bits a row's weight quantizer can train: LSQ's signed weight grid needs >= 2 bits,
# so its rows get their own allocation without 1-bit weights.
MIXED_WEIGHT_BITS = {'lsq': (2, 3, 4)}
MIXED_BATCHES = 2
# Learning rates at batch 128 (the configs scale them linearly with the batch). From scratch
# every run uses its config's own rate (0.1); a fine-tune starts ten times lower, as the
# quantized ImageNet configs and the earlier CIFAR study do.
FINE_TUNE_LR = 0.01
# A teacher about 3x ResNet-20's size (flops and parameters) for the distill group.
LARGE_TEACHER_MODEL = {'model': 'cifar_resnet56'}
# The label-free distillation N2UQ trains with; the `_mixed` row halves it with the labels.
DISTILL = {'distill.temperature': 1.0, 'distill.weight': 1.0}
METHODS = (('dq', 'DQ', {'quant.weight_quantizer': 'dq', 'quant.act_quantizer': 'dq'}),
           ('lqnets', 'LQ-Nets', {'quant.weight_quantizer': 'lqnets',
                                  'quant.act_quantizer': 'lqnets'}),
           ('lsq', 'LSQ', {'quant.weight_quantizer': 'lsq', 'quant.act_quantizer': 'lsq'}))


@dataclasses.dataclass(frozen=True)
class Scale:
  """How big the study is. Everything else (model, recipes, rows) is the same at every scale."""
  name: str
  train_per_class: int  # Training images per class (class-balanced subset of the train split).
  batch_size: int
  float_epochs: int
  fine_tune_epochs: tuple[int, ...]
  scratch_epochs: int
  seeds: tuple[int, ...]

  def describe(self) -> str:
    fine_tunes = ' / '.join(str(e) for e in self.fine_tune_epochs)
    return (f'scale `{self.name}`: {self.train_per_class * NUM_CLASSES:,} training images '
            f'({self.train_per_class} per class), batch {self.batch_size}, float '
            f'{self.float_epochs} epochs, fine-tunes {fine_tunes} epochs, from scratch '
            f'{self.scratch_epochs} epochs, seeds {", ".join(map(str, self.seeds))}')

  def identity(self) -> dict:
    """What a record directory's rows depend on (seeds can be added later)."""
    fields = dataclasses.asdict(self)
    fields.pop('seeds')
    fields['fine_tune_epochs'] = list(self.fine_tune_epochs)
    return fields


SCALES = {
    # What a shared 2-core CPU trains in under an hour (measured: see docs/results.md). From
    # scratch gets the float run's epochs plus the fine-tune's, so both reach a quantized model
    # with the same epochs.
    'cpu': Scale('cpu', train_per_class=50, batch_size=64, float_epochs=3,
                 fine_tune_epochs=(1,), scratch_epochs=4, seeds=(0, 1)),
    # Twice the images and epochs of `cpu`: its float, fine-tune and from-scratch groups took
    # 85 minutes on a 2-core CPU shared with other work (docs/results.md).
    'cpu_medium': Scale('cpu_medium', train_per_class=100, batch_size=64, float_epochs=6,
                        fine_tune_epochs=(2,), scratch_epochs=8, seeds=(0, 1)),
    # The scale of the study in issue 15 (one H200): 28,000 images, float 40 epochs, fine-tunes
    # 15 and 30, from scratch 70 (= 40 + 30).
    'gpu': Scale('gpu', train_per_class=280, batch_size=256, float_epochs=40,
                 fine_tune_epochs=(15, 30), scratch_epochs=70, seeds=(0, 1, 2)),
}


GROUPS = {
    'float': 'the float runs',
    'fine_tune': 'each method fine-tuned from the float run',
    'scratch': 'each method from scratch, for the float and fine-tune epochs together',
    'recipes': 'fine-tune variants (learning rate, warm-up, weight decay, epochs, BatchNorm '
               're-estimation)',
    'claims': "DQ's per-channel activation error vs pooled, floored and RMS channel weights "
              '(A2, A1); direct vs latent weights',
    'depthwise': 'MobileNetV2 (depthwise convolutions): float, then W2A2 DQ per-channel vs '
                 'pooled vs RMS-weighted activation error',
    'no_bn': 'ResNet-20 without BatchNorm (SkipInit): float, then DQ per-channel vs pooled '
             'vs floored and RMS channel weights at A2 and A1',
    'mixed': 'per-layer bits (dqnn.mixed_precision, from the float run) within the BOPs of '
             'uniform W2A2, for DQ and LSQ; loss vs proxy sensitivity',
    'distill': 'W2A2 DQ, LQ-Nets, LSQ (and DQ W2A1, W3A3) fine-tuned with a float teacher: the '
               'float ResNet-20 of the same seed, and a float ResNet-56',
}


@dataclasses.dataclass(frozen=True)
class Row:
  """One run: a config file plus overrides (dotted config paths), for one seed."""
  cell: str  # Seeds of one cell are averaged in the table.
  description: str
  config_file: str
  overrides: dict
  seed: int
  group: str  # One of GROUPS (select with --groups).
  init_from: str = ''  # Name of the float row this one fine-tunes ('' = from scratch).
  # 'loss' or 'proxy': per-layer bits allocated from the float run by that sensitivity within
  # the BOPs of the row's own (uniform) config, as `dqnn.mixed_precision --like` does.
  mixed: str = ''
  teacher: str = ''  # Name of the row whose run teaches this one ('' = no teacher).

  @property
  def name(self) -> str:
    return f'{self.cell}_s{self.seed}'

  @property
  def needs(self) -> tuple[str, ...]:
    """The rows that must have finished before this one starts."""
    return tuple(name for name in (self.init_from, self.teacher) if name)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Two cells the table compares: `question` is what their difference would show."""
  first: str
  second: str
  question: str


def _float_row(scale: Scale, seed: int) -> Row:
  return Row('fp', 'Float ResNet-20 (start of every fine-tune with the same seed)', FLOAT_CONFIG,
             {'num_epochs': scale.float_epochs}, seed, 'float')


def _fine_tune(cell, description, epochs, seed, group, overrides,
               config_file=W2A2_CONFIG, float_cell='fp', mixed='') -> Row:
  return Row(cell, description, config_file,
             {'num_epochs': epochs, 'optimizer.learning_rate': FINE_TUNE_LR, **overrides},
             seed, group, init_from=f'{float_cell}_s{seed}', mixed=mixed)


def _recipes(scale: Scale, seed: int) -> list[Row]:
  """Fine-tune variants that could explain why fine-tuning loses to training from scratch."""
  epochs = scale.fine_tune_epochs[0]
  dq = METHODS[0][2]
  out = [
      _fine_tune(f'w2a2_dq_ft{epochs}_lr0.1_warmup', f'W2A2 DQ fine-tuned {epochs} epochs at lr '
                 '0.1 (the from-scratch rate) after a linear warm-up over 10% of them', epochs,
                 seed, 'recipes', {**dq, 'optimizer.learning_rate': 0.1,
                                   'schedule.warmup_epochs': 0.1 * epochs}),
      _fine_tune(f'w2a2_dq_ft{epochs}_lr0.03', f'W2A2 DQ fine-tuned {epochs} epochs at lr 0.03',
                 epochs, seed, 'recipes', {**dq, 'optimizer.learning_rate': 0.03}),
      _fine_tune(f'w2a2_dq_ft{epochs}_no_wd', f'W2A2 DQ fine-tuned {epochs} epochs without '
                 'weight decay (none on w_q)', epochs, seed, 'recipes',
                 {**dq, 'optimizer.weight_decay': 0.0}),
      _fine_tune(f'w2a2_dq_ft{epochs}_bn_reest', f'W2A2 DQ fine-tuned {epochs} epochs, then '
                 f'BatchNorm statistics re-estimated on {BN_REESTIMATION_BATCHES} training '
                 'batches (the run also records its eval before)', epochs, seed, 'recipes',
                 {**dq, 'bn_reestimation_batches': BN_REESTIMATION_BATCHES}),
  ]
  if scale.scratch_epochs not in scale.fine_tune_epochs:  # Else the fine_tune group has it.
    out.append(_fine_tune(f'w2a2_dq_ft{scale.scratch_epochs}', f'W2A2 DQ fine-tuned '
                          f'{scale.scratch_epochs} epochs (as many quantized epochs as from '
                          'scratch, after the float run)', scale.scratch_epochs, seed,
                          'recipes', dq))
  return out


def _claims(scale: Scale, seed: int) -> list[Row]:
  """DQ's two claims, everything else equal: per-channel against pooled activation error (at 2
  and at 1 activation bits, where channel scales matter more), and the direct update of the
  quantized weights against a latent float kernel (with DQ's own level tables and level
  update: `latent_levels`; and with LQ-Nets' weight quantizer)."""
  epochs = scale.fine_tune_epochs[0]
  dq = METHODS[0][2]
  _, pooled, floored, rms = ({**dq, 'quant.act_options': options}
                             for _, _, options in WEIGHTINGS)
  one_bit = {'quant.a_bits': 1}
  return [
      _fine_tune(f'w2a2_dq_pooled_ft{epochs}', f'W2A2 DQ with pooled activation error, '
                 f'fine-tuned {epochs} epochs', epochs, seed, 'claims', pooled),
      _fine_tune(f'w2a1_dq_ft{epochs}', f'W2A1 DQ (1-bit activations), fine-tuned {epochs} '
                 'epochs', epochs, seed, 'claims', {**dq, **one_bit}),
      _fine_tune(f'w2a1_dq_pooled_ft{epochs}', f'W2A1 DQ with pooled activation error, '
                 f'fine-tuned {epochs} epochs', epochs, seed, 'claims', {**pooled, **one_bit}),
      _fine_tune(f'w2a1_dq_eps1_ft{epochs}', 'W2A1 DQ with channel weights floored at the '
                 f'mean channel energy (eps=1), fine-tuned {epochs} epochs', epochs, seed,
                 'claims', {**floored, **one_bit}),
      _fine_tune(f'w2a2_dq_eps1_ft{epochs}', 'W2A2 DQ with channel weights floored at the '
                 f'mean channel energy (eps=1), fine-tuned {epochs} epochs', epochs, seed,
                 'claims', floored),
      _fine_tune(f'w2a1_dq_rms_ft{epochs}', 'W2A1 DQ with channel weights by RMS (between '
                 f'per-channel and pooled), fine-tuned {epochs} epochs', epochs, seed, 'claims',
                 {**rms, **one_bit}),
      _fine_tune(f'w2a2_dq_rms_ft{epochs}', 'W2A2 DQ with channel weights by RMS (between '
                 f'per-channel and pooled), fine-tuned {epochs} epochs', epochs, seed, 'claims',
                 rms),
      _fine_tune(f'w2a2_latent_weights_dq_acts_ft{epochs}', 'W2A2 latent weights (LQ-Nets) + '
                 f'DQ activations, fine-tuned {epochs} epochs', epochs, seed, 'claims',
                 {**dq, 'quant.weight_quantizer': 'lqnets'}),
      _fine_tune(f'w2a2_latent_levels_ft{epochs}', 'W2A2 DQ with a latent float kernel '
                 "(DQ's levels and level update, weights moved through the kernel), "
                 f'fine-tuned {epochs} epochs', epochs, seed, 'claims',
                 {**dq, 'quant.weight_quantizer': 'latent_levels'}),
  ]


def _depthwise(scale: Scale, seed: int) -> list[Row]:
  """MobileNetV2: its float run, and DQ per-channel vs pooled activation error fine-tuned from
  it, where depthwise convolutions give the most unequal channel scales."""
  epochs = scale.fine_tune_epochs[0]
  dq = METHODS[0][2]
  fine_tune = functools.partial(_fine_tune, epochs=epochs, seed=seed, group='depthwise',
                                config_file=MOBILENET_W2A2_CONFIG, float_cell='fp_mobilenetv2')
  return [
      Row('fp_mobilenetv2', 'Float MobileNetV2 (start of the MobileNetV2 fine-tunes)',
          MOBILENET_FLOAT_CONFIG, {'num_epochs': scale.float_epochs}, seed, 'depthwise'),
      fine_tune(f'w2a2_mobilenetv2_dq_ft{epochs}', f'MobileNetV2 W2A2 DQ, fine-tuned {epochs} '
                'epochs', overrides=dq),
  ] + [fine_tune(f'w2a2_mobilenetv2_dq{infix}_ft{epochs}', f'MobileNetV2 W2A2 DQ with '
                 f'{description}, fine-tuned {epochs} epochs',
                 overrides={**dq, 'quant.act_options': options})
       for infix, description, options in WEIGHTINGS if infix in ('_pooled', '_rms')]


def _no_bn(scale: Scale, seed: int) -> list[Row]:
  """ResNet-20 without BatchNorm: its float run, and DQ with each activation error weighting
  at A2 and A1 fine-tuned from it, where every quantizer sees its layer's unnormalized output."""
  epochs = scale.fine_tune_epochs[0]
  dq = {**METHODS[0][2], **NO_BN_MODEL}
  float_row = Row('fp_no_bn', 'Float ResNet-20 without BatchNorm (start of the no-BatchNorm '
                  'fine-tunes)', FLOAT_CONFIG, {'num_epochs': scale.float_epochs, **NO_BN_MODEL},
                  seed, 'no_bn')
  return [float_row] + [
      _fine_tune(f'w2a{bits}_no_bn_dq{infix}_ft{epochs}', f'W2A{bits} DQ without BatchNorm, '
                 f'{description}, fine-tuned {epochs} epochs', epochs, seed, 'no_bn',
                 {**dq, 'quant.act_options': options, 'quant.a_bits': bits},
                 float_cell='fp_no_bn')
      for infix, description, options in WEIGHTINGS for bits in (2, 1)]


def _mixed(scale: Scale, seed: int) -> list[Row]:
  """Mixed precision at no more BOPs than uniform W2A2: the bits come from the float run of the
  same seed (its measured loss sensitivity, or DQ's quantization-error proxy), among the bits
  the row's quantizer can train (`MIXED_WEIGHT_BITS`: LSQ's weights take no 1 bit, so LSQ's
  allocation is its own), then the W2A2 fine-tune recipe."""
  epochs = scale.fine_tune_epochs[0]
  budget = 'within the BOPs of uniform W2A2'
  out = [_fine_tune(f'w2a2_mixed_{key}_ft{epochs}', f'Mixed-precision {label}, per-layer bits '
                    f'by measured loss sensitivity {budget}, fine-tuned {epochs} epochs',
                    epochs, seed, 'mixed', overrides, mixed='loss')
         for key, label, overrides in METHODS if key in ('dq', 'lsq')]
  out.append(_fine_tune(f'w2a2_mixed_dq_proxy_ft{epochs}', 'Mixed-precision DQ, per-layer bits '
                        f'by the quantization-error proxy {budget}, fine-tuned {epochs} epochs',
                        epochs, seed, 'mixed', METHODS[0][2], mixed='proxy'))
  return out


def _distill(scale: Scale, seed: int) -> list[Row]:
  """Fine-tunes with a float teacher: the float ResNet-20 they start from, or a ResNet-56."""
  epochs = scale.fine_tune_epochs[0]
  dq = METHODS[0][2]
  large = Row('fp_resnet56', 'Float ResNet-56 (the larger teacher)', FLOAT_CONFIG,
              {'num_epochs': scale.float_epochs, **LARGE_TEACHER_MODEL}, seed, 'distill')
  teachers = (('kd', f'fp_s{seed}', 'the float ResNet-20 of its seed'),
              ('kd56', large.name, 'the float ResNet-56 of its seed'))

  def taught(cell, description, overrides, teacher):
    return dataclasses.replace(
        _fine_tune(cell, description, epochs, seed, 'distill', {**DISTILL, **overrides}),
        teacher=teacher)

  out = [large]
  out += [taught(f'w2a2_{key}_ft{epochs}_{suffix}', f'W2A2 {label}, fine-tuned {epochs} '
                 f'epochs, label-free distillation from {teacher_label}', overrides, teacher)
          for key, label, overrides in METHODS for suffix, teacher, teacher_label in teachers]
  out.append(taught(f'w2a2_dq_ft{epochs}_kd_mixed', f'W2A2 DQ, fine-tuned {epochs} epochs, '
                    'half label loss, half distillation from the float ResNet-20 of its seed',
                    {**dq, 'distill.weight': 0.5}, f'fp_s{seed}'))
  out.append(taught(f'w2a1_dq_ft{epochs}_kd', f'W2A1 DQ, fine-tuned {epochs} epochs, '
                    'label-free distillation from the float ResNet-20 of its seed',
                    {**dq, 'quant.a_bits': 1}, f'fp_s{seed}'))
  w3a3 = {**dq, 'quant.w_bits': 3, 'quant.a_bits': 3}
  out.append(_fine_tune(f'w3a3_dq_ft{epochs}', f'W3A3 DQ, fine-tuned {epochs} epochs (no '
                        'teacher)', epochs, seed, 'distill', w3a3))
  out.append(taught(f'w3a3_dq_ft{epochs}_kd', f'W3A3 DQ, fine-tuned {epochs} epochs, '
                    'label-free distillation from the float ResNet-20 of its seed', w3a3,
                    f'fp_s{seed}'))
  return out


def rows(scale: Scale) -> list[Row]:
  """Every row of the study at `scale`, in the order they start (the float runs first)."""
  out = [_float_row(scale, seed) for seed in scale.seeds]
  for epochs in scale.fine_tune_epochs:
    out += [_fine_tune(f'w2a2_{key}_ft{epochs}', f'W2A2 {label}, fine-tuned {epochs} epochs '
                       f'from the float run', epochs, seed, 'fine_tune', overrides)
            for seed in scale.seeds for key, label, overrides in METHODS]
  out += [Row(f'w2a2_{key}_scratch{scale.scratch_epochs}',
              f'W2A2 {label}, from scratch {scale.scratch_epochs} epochs', W2A2_CONFIG,
              {'num_epochs': scale.scratch_epochs, **overrides}, seed, 'scratch')
          for seed in scale.seeds for key, label, overrides in METHODS]
  for make in (_recipes, _claims, _depthwise, _no_bn, _mixed, _distill):
    out += [row for seed in scale.seeds for row in make(scale, seed)]
  return out


def comparisons(scale: Scale) -> list[Comparison]:
  """The differences the study is for; the table says which lie outside the seed ranges."""
  out = []
  modes = [f'ft{e}' for e in scale.fine_tune_epochs] + [f'scratch{scale.scratch_epochs}']
  for mode in modes:
    for i, (first, first_label, _) in enumerate(METHODS):
      for second, second_label, _ in METHODS[i + 1:]:
        out.append(Comparison(f'w2a2_{first}_{mode}', f'w2a2_{second}_{mode}',
                              f'{first_label} vs {second_label} ({mode})'))
  longest = f'ft{max(scale.fine_tune_epochs)}'
  for key, label, _ in METHODS:
    out.append(Comparison(f'w2a2_{key}_scratch{scale.scratch_epochs}', f'w2a2_{key}_{longest}',
                          f'{label}: from scratch vs fine-tuned'))
  first = f'ft{scale.fine_tune_epochs[0]}'
  baseline = f'w2a2_dq_{first}'
  for row in _recipes(scale, scale.seeds[0]):
    out.append(Comparison(row.cell, baseline, f'fine-tune recipe: {row.cell} vs {baseline}'))
  out.append(Comparison(f'w2a2_dq_scratch{scale.scratch_epochs}',
                        f'w2a2_dq_ft{scale.scratch_epochs}',
                        'DQ: from scratch vs fine-tuned, same quantized epochs'))
  out.append(Comparison(baseline, f'w2a2_dq_pooled_{first}', 'A2: per-channel vs pooled error'))
  out.append(Comparison(f'w2a1_dq_{first}', f'w2a1_dq_pooled_{first}',
                        'A1: per-channel vs pooled error'))
  for bits in (1, 2):
    out.append(Comparison(f'w2a{bits}_dq_eps1_{first}', f'w2a{bits}_dq_{first}',
                          f'A{bits}: channel weights floored at the mean energy vs not'))
  out.append(Comparison(f'w2a1_dq_eps1_{first}', f'w2a1_dq_pooled_{first}',
                        'A1: channel weights floored at the mean energy vs pooled'))
  for setting, infix in (('', ''), ('No BatchNorm, ', 'no_bn_')):
    for bits in (2, 1):
      prefix = f'w2a{bits}_{infix}dq'
      out += [Comparison(f'{prefix}_rms_{first}', f'{prefix}_{first}',
                         f'{setting}A{bits}: channel weights by RMS vs per-channel'),
              Comparison(f'{prefix}_rms_{first}', f'{prefix}_pooled_{first}',
                         f'{setting}A{bits}: channel weights by RMS vs pooled')]
  out.append(Comparison(baseline, f'w2a2_latent_weights_dq_acts_{first}',
                        'DQ direct weight update vs latent LQ-Nets weights'))
  out.append(Comparison(baseline, f'w2a2_latent_levels_{first}',
                        'DQ direct weight update vs a latent kernel, all else equal'))
  out.append(Comparison(f'w2a2_mobilenetv2_dq_{first}', f'w2a2_mobilenetv2_dq_pooled_{first}',
                        'MobileNetV2 A2: per-channel vs pooled error'))
  for other, label in (('', 'per-channel'), ('pooled_', 'pooled')):
    out.append(Comparison(f'w2a2_mobilenetv2_dq_rms_{first}',
                          f'w2a2_mobilenetv2_dq_{other}{first}',
                          f'MobileNetV2 A2: channel weights by RMS vs {label}'))
  for bits in (2, 1):
    channel, pooled = f'w2a{bits}_no_bn_dq_{first}', f'w2a{bits}_no_bn_dq_pooled_{first}'
    floored = f'w2a{bits}_no_bn_dq_eps1_{first}'
    out += [Comparison(channel, pooled, f'No BatchNorm, A{bits}: per-channel vs pooled error'),
            Comparison(floored, channel, f'No BatchNorm, A{bits}: channel weights floored at '
                       'the mean energy vs not'),
            Comparison(floored, pooled, f'No BatchNorm, A{bits}: channel weights floored at '
                       'the mean energy vs pooled')]
  for key, label in (('dq', 'DQ'), ('lsq', 'LSQ')):
    out.append(Comparison(f'w2a2_mixed_{key}_{first}', f'w2a2_{key}_{first}',
                          f'{label}: mixed precision vs uniform W2A2, at most its BOPs'))
  out.append(Comparison(f'w2a2_mixed_dq_{first}', f'w2a2_mixed_lsq_{first}',
                        'Mixed precision, each within the same BOPs: DQ vs LSQ'))
  out.append(Comparison(f'w2a2_mixed_dq_{first}', f'w2a2_mixed_dq_proxy_{first}',
                        'Mixed-precision DQ: bits by measured loss vs by the proxy'))
  for key, label, _ in METHODS:
    for suffix, teacher in (('kd', 'ResNet-20'), ('kd56', 'ResNet-56')):
      out.append(Comparison(f'w2a2_{key}_{first}_{suffix}', f'w2a2_{key}_{first}',
                            f'{label}: float {teacher} teacher vs none'))
    out.append(Comparison(f'w2a2_{key}_{first}_kd56', f'w2a2_{key}_{first}_kd',
                          f'{label}: ResNet-56 teacher vs ResNet-20 teacher'))
  for suffix, teacher in (('kd', 'ResNet-20'), ('kd56', 'ResNet-56')):
    for other, label, _ in METHODS[1:]:
      out.append(Comparison(f'w2a2_dq_{first}_{suffix}', f'w2a2_{other}_{first}_{suffix}',
                            f'with a {teacher} teacher: DQ vs {label}'))
  out.append(Comparison(f'w2a2_dq_{first}_kd_mixed', f'w2a2_dq_{first}_kd',
                        'DQ: half labels, half teacher vs teacher only'))
  for bits in ('w2a1', 'w3a3'):
    out.append(Comparison(f'{bits}_dq_{first}_kd', f'{bits}_dq_{first}',
                          f'DQ {bits.upper()}: ResNet-20 teacher vs none'))
  return out


def verdict(first: list[float], second: list[float]) -> str:
  """Whether two cells' seed ranges are apart: with overlapping ranges a difference is a tie."""
  if len(first) < 2 or len(second) < 2:
    return 'fewer than 2 seeds: no range to judge'
  if min(first) > max(second):
    return '**first higher, outside both seed ranges**'
  if min(second) > max(first):
    return '**second higher, outside both seed ranges**'
  return 'tie (seed ranges overlap)'


def _set(config, dotted: str, value) -> None:
  *parents, leaf = dotted.split('.')
  for key in parents:
    config = config[key]
  config[leaf] = value


def build_config(row: Row, scale: Scale, data_dir: str, runs_dir: Path, runlocal: bool = False):
  """The row's ConfigDict: its config file, the scale's data and batch, then its overrides.

  `runlocal` shrinks it as `configs/x.py:runlocal` does (tiny model, a few steps, the embedded
  CIFAR-100 sample): a smoke run of the study.
  """
  config = importlib.import_module(row.config_file[:-3].replace('/', '.')).get_config()
  config.data_dir = data_dir
  config.download = False
  config.global_batch_size = scale.batch_size
  config.seed = row.seed
  config.eval_every_steps = 0  # Evaluate once, at the end.
  config.log_every_steps = 50
  config.checkpoint_every_steps = 200
  config.keep_checkpoints = 1
  config.weight_images = False
  if row.init_from:
    config.init_from = str(runs_dir / row.init_from)
  if row.teacher:
    config.distill.teacher_workdir = str(runs_dir / row.teacher)
  for dotted, value in row.overrides.items():
    _set(config, dotted, value)
  return base.runlocal(config) if runlocal else config


def data_dir_for(scale: Scale, runs_dir: Path) -> Path:
  return runs_dir / 'data' / f'{scale.train_per_class}_per_class'


def prepare_data(scale: Scale, npz: str, runs_dir: Path) -> Path:
  """The scale's class-balanced CIFAR-100 subset (prepared once from `npz`); its TFDS dir."""
  import tensorflow_datasets as tfds  # Imported here: the parent needs them only once.
  from dqnn.data import prepare
  data_dir = data_dir_for(scale, runs_dir)
  marker = data_dir / 'subset.json'
  if marker.exists():
    return data_dir
  if not npz:
    raise SystemExit(f'{data_dir} is not prepared yet: pass --npz=<CIFAR-100 train.npz> '
                     '(e.g. ../shared/data/cifar100/train.npz).')
  tfds.disable_progress_bar()
  result = prepare.prepare_cifar100_npz(
      npz, str(data_dir), holdout_per_class=HOLDOUT_PER_CLASS,
      limit_per_class=HOLDOUT_PER_CLASS + scale.train_per_class, overwrite=True)
  expected = {'train': scale.train_per_class * NUM_CLASSES,
              'test': HOLDOUT_PER_CLASS * NUM_CLASSES}
  if result['counts'] != expected:
    raise SystemExit(f'{npz} gave splits {result["counts"]}, not {expected}: it holds too few '
                     'images per class for this scale.')
  marker.write_text(json.dumps({'npz': str(npz), **result['counts']}) + '\n')
  return data_dir


def _finished(workdir: Path, split: str = 'eval') -> dict | None:
  """The run's final `split` record, or None if it stopped before its last step."""
  metrics = workdir / 'metrics.jsonl'
  if not metrics.exists():
    return None
  evals = [json.loads(line) for line in metrics.read_text().splitlines()
           if line.strip() and json.loads(line)['split'] == split]
  return evals[-1] if evals else None


def mixed_allocation(row: Row, uniform, runs_dir: Path) -> dict:
  """The row's per-layer bits from its float run within the BOPs of `uniform` (the row's config
  before allocation): `{'bits': {layer: [w_bits, a_bits]}, 'budget_bops', 'table'}`. Measured
  once per float run, sensitivity and budget (rows that share it wait for the first)."""
  from dqnn import mixed_precision, runs  # JAX: only in a row's own process.
  budget = mixed_precision.total_cost(uniform, 'bops')
  weight_bits = MIXED_WEIGHT_BITS.get(uniform.quant.weight_quantizer, MIXED_BITS)
  cache = (runs_dir / row.init_from /
           f'mixed_precision_{row.mixed}_{budget}_w{"".join(map(str, weight_bits))}.json')
  with open(cache.with_suffix('.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not cache.exists():
      float_config, variables = runs.read_workdir(str(runs_dir / row.init_from))
      layers = mixed_precision.body_layers(uniform)
      costs, fixed = mixed_precision.choice_costs(uniform, layers, weight_bits, MIXED_BITS,
                                                  'bops')
      probe = mixed_precision.Probe(float_config, variables, MIXED_BATCHES)
      sensitivities = mixed_precision.measure(probe, layers, weight_bits, MIXED_BITS,
                                              row.mixed)
      result = mixed_precision.solve(sensitivities, costs, fixed, budget, 'bops', row.mixed)
      allocation = {'bits': {c.layer: [c.w_bits, c.a_bits] for c in result.choices},
                    'budget_bops': budget, 'table': mixed_precision.as_table(result)}
      cache.write_text(json.dumps(allocation, indent=1) + '\n')
  return json.loads(cache.read_text())


def run_one(row: Row, scale: Scale, args) -> int:
  """Trains (or resumes) one row in this process; records it once it has finished."""
  from dqnn import train  # Imported here so that the parent process never starts JAX.
  runs_dir, record_dir = Path(args.runs_dir), Path(args.record_dir)
  config = build_config(row, scale, str(data_dir_for(scale, runs_dir)), runs_dir, args.runlocal)
  mixed = {}
  if row.mixed:
    from dqnn import mixed_precision  # pylint: disable=g-import-not-at-top
    mixed = mixed_allocation(row, config, runs_dir)
    config.quant.overrides = mixed_precision.allocation_overrides(
        config, {layer: tuple(bits) for layer, bits in mixed['bits'].items()})
    mixed['bops'] = mixed_precision.total_cost(config, 'bops')
    if mixed['bops'] > mixed['budget_bops']:
      raise SystemExit(f'{row.name}: {mixed["bops"]:,} BOPs > budget {mixed["budget_bops"]:,}.')
  workdir = runs_dir / row.name
  start = time.monotonic()
  final = train.train_and_evaluate(config, str(workdir))
  previous = workdir / 'wall_s'
  total_wall = time.monotonic() - start + (float(previous.read_text()) if previous.exists()
                                           else 0.0)
  previous.write_text(f'{total_wall:.1f}')
  last_eval = _finished(workdir)
  before = _finished(workdir, split=train.BEFORE_BN_REESTIMATION)
  if last_eval is None:
    print(f'{row.name} stopped at step {final["step"]}; it resumes on the next call.')
    return STOPPED_EARLY
  record = record_dir / row.name
  if (record / SUMMARY).exists():  # A float run trained again for fine-tunes (_retrained).
    recorded = json.loads((record / SUMMARY).read_text())['eval_top1']
    if recorded != last_eval['top1']:
      # Out of the way, so that no fine-tune starts from it; the next call trains it again.
      shutil.rmtree(workdir.with_name(f'{row.name}.differs_from_record'), ignore_errors=True)
      workdir.rename(workdir.with_name(f'{row.name}.differs_from_record'))
      raise SystemExit(f'{row.name} trained again reached top-1 {last_eval["top1"]}, its record '
                       f'{recorded}: new fine-tunes would not pair with the recorded ones. Use '
                       'another --record_dir (or the runs_dir that trained it).')
    print(f'{row.name} trained again: the same top-1 as its record ({recorded}).')
    return 0
  record.mkdir(parents=True, exist_ok=True)
  for name in ('config.json', 'metrics.jsonl'):
    shutil.copy(workdir / name, record / name)
  summary = {'row': row.name, 'cell': row.cell, 'description': row.description,
             'group': row.group, 'config_file': row.config_file, 'overrides': row.overrides,
             'seed': row.seed, 'init_from': row.init_from, 'teacher': row.teacher,
             'scale': scale.name,
             'steps': final['step'], 'eval_top1': last_eval['top1'],
             'eval_loss': last_eval['loss'], 'wall_s': round(total_wall, 1),
             **({'eval_top1_before_bn_reestimation': before['top1']} if before else {}),
             **({'mixed_precision': {'sensitivity': row.mixed, **mixed}} if mixed else {}),
             'command': f'python -m experiments.budgeted_study --scale={scale.name} '
                        f'--only={row.name}'}
  (record / SUMMARY).write_text(json.dumps(summary, indent=1) + '\n')
  return 0


def _done(row: Row, record_dir: Path) -> bool:
  return (record_dir / row.name / SUMMARY).exists()


def _retrained(selected: list[Row], runs_dir: Path, record_dir: Path) -> set[str]:
  """Recorded rows whose workdir is gone (a cleaned or another machine's runs_dir) while a
  selected row still needs them (to start from, or as its teacher): they train again, and must
  match their record."""
  needed = {name for row in selected if not _done(row, record_dir) for name in row.needs}
  return {name for name in needed if _finished(runs_dir / name) is None}


def _spawn(row: Row, scale: Scale, args, cores: set[int] | None) -> subprocess.Popen:
  command = [sys.executable, '-m', 'experiments.budgeted_study', f'--scale={scale.name}',
             f'--runs_dir={args.runs_dir}', f'--record_dir={args.record_dir}',
             f'--train_per_class={scale.train_per_class}', f'--batch_size={scale.batch_size}',
             f'--float_epochs={scale.float_epochs}', f'--scratch_epochs={scale.scratch_epochs}',
             f'--fine_tune_epochs={",".join(map(str, scale.fine_tune_epochs))}',
             f'--seeds={",".join(map(str, scale.seeds))}', f'--run_one={row.name}']
  command += ['--runlocal'] if args.runlocal else []
  env = dict(os.environ)
  # Programs that rows share (evaluation, a resumed run's step) are compiled once.
  env.setdefault('JAX_COMPILATION_CACHE_DIR', str(Path(args.runs_dir) / 'jax_cache'))
  if cores is None and args.workers > 1:  # Sharing one accelerator.
    env['XLA_PYTHON_CLIENT_MEM_FRACTION'] = f'{0.9 / args.workers:.2f}'
  return scheduler.spawn(command, cwd=ROOT, log_path=scheduler.log_path(args.runs_dir, row.name),
                         cores=cores, env=env)


def run_study(selected: list[Row], scale: Scale, args) -> list[Row]:
  """Runs every selected row not yet recorded; returns the rows left: failed, stopped by the
  time budget, or waiting for a float run that is not selected or failed."""
  runs_dir, record_dir = Path(args.runs_dir), Path(args.record_dir)
  by_name = {row.name: row for row in rows(scale)}
  deadline = (time.monotonic() + 60 * args.time_budget_min if args.time_budget_min
              else float('inf'))
  again = _retrained(selected, runs_dir, record_dir)
  pending = [row for row in selected if not _done(row, record_dir) or row.name in again]
  left = scheduler.run(
      [scheduler.Job(row.name, row.needs) for row in pending],
      slots=scheduler.core_slots(args.workers, pin=args.scale.startswith('cpu')),
      is_done=lambda name: _done(by_name[name], record_dir),
      start=lambda job, cores: _spawn(by_name[job.name], scale, args, cores),
      on_done=lambda job: write_table(scale, record_dir),
      log_path=lambda job: scheduler.log_path(runs_dir, job.name), deadline=deadline)
  return [by_name[job.name] for job in left]


def _accuracies(scale: Scale, record_dir: Path) -> tuple[Scale, collections.OrderedDict]:
  """`scale` with every recorded seed (also those a call with more `--seeds` added), and cell
  -> the recorded summaries of its seeds, in row order."""
  recorded = {path.parent.name: json.loads(path.read_text())
              for path in record_dir.glob(f'*/{SUMMARY}')}
  seeds = set(scale.seeds) | {summary['seed'] for summary in recorded.values()}
  scale = dataclasses.replace(scale, seeds=tuple(sorted(seeds)))
  cells = collections.OrderedDict()
  for row in rows(scale):
    if row.name in recorded:
      cells.setdefault(row.cell, []).append(recorded[row.name])
  return scale, cells


def write_table(scale: Scale, record_dir: Path) -> str:
  """Rewrites results.md: mean and range per cell, then the comparisons and their verdicts."""
  scale, cells = _accuracies(scale, record_dir)
  top1 = {cell: [100 * run['eval_top1'] for run in runs] for cell, runs in cells.items()}
  lines = [
      '# CIFAR-100 budgeted study (written by experiments/budgeted_study.py)', '',
      f'ResNet-20 (MobileNetV2, or ResNet-20 without BatchNorm, where a row says so), first '
      f'conv and last layer float; {scale.describe()}. SGD momentum 0.9, wd '
      '5e-4, cosine; lr 0.1 (float and from scratch) or 0.01 (fine-tunes) at batch 128, scaled '
      'linearly with the batch. Each fine-tune starts from the float run of its own seed. Data: '
      f'train = {scale.train_per_class} images per class after the first '
      f'{HOLDOUT_PER_CLASS} of each class of `../shared/data/cifar100/train.npz`; top-1 on the '
      f'held-out first {HOLDOUT_PER_CLASS} per class (5,000 images; not the official test '
      'set). Hardware and date: see docs/results.md.', '',
      '| cell | description | seeds | held-out top-1 % mean | min–max | steps | wall min/run |',
      '| --- | --- | ---: | ---: | ---: | ---: | ---: |']
  for cell, runs in cells.items():
    values = top1[cell]
    spread = f'{min(values):.2f}–{max(values):.2f}' if len(values) > 1 else '—'
    wall = statistics.mean(run['wall_s'] for run in runs) / 60
    lines.append(f'| `{cell}` | {runs[0]["description"]} | {len(values)} | '
                 f'{statistics.mean(values):.2f} | {spread} | {runs[0]["steps"]} | {wall:.1f} |')
  lines += ['', 'Differences: a difference counts only when the two seed ranges do not overlap. '
            'Per seed: first − second for each seed both cells ran (the same seed fine-tunes '
            'from the same float run and draws the same batches, so these pairs share most of '
            'their noise).', '',
            '| comparison | first | second | first − second (points) | per seed | verdict |',
            '| --- | --- | --- | ---: | --- | --- |']
  seeds = {cell: {run['seed']: 100 * run['eval_top1'] for run in runs if 'seed' in run}
           for cell, runs in cells.items()}
  for comparison in comparisons(scale):
    if comparison.first in top1 and comparison.second in top1:
      first, second = top1[comparison.first], top1[comparison.second]
      difference = statistics.mean(first) - statistics.mean(second)
      a, b = seeds[comparison.first], seeds[comparison.second]
      per_seed = ', '.join(f'{a[seed] - b[seed]:+.2f}' for seed in sorted(a.keys() & b.keys()))
      lines.append(f'| {comparison.question} | `{comparison.first}` | `{comparison.second}` | '
                   f'{difference:+.2f} | {per_seed or "—"} | {verdict(first, second)} |')
  lines += _paired_bn_lines(cells) + _mixed_lines(cells)
  text = '\n'.join(lines) + '\n'
  record_dir.mkdir(parents=True, exist_ok=True)
  (record_dir / 'results.md').write_text(text)
  return text


def _paired_bn_lines(cells: collections.OrderedDict) -> list[str]:
  """Runs that re-estimated BatchNorm statistics: top-1 before and after, run by run (paired:
  the same trained weights, so seed noise cancels)."""
  runs = [run for cell_runs in cells.values() for run in cell_runs
          if 'eval_top1_before_bn_reestimation' in run]
  if not runs:
    return []
  lines = ['', 'BatchNorm re-estimation, paired (the same run before and after; '
           f'{BN_REESTIMATION_BATCHES} training batches):', '',
           '| run | top-1 % before | after | after − before |', '| --- | ---: | ---: | ---: |']
  for run in runs:
    before, after = 100 * run['eval_top1_before_bn_reestimation'], 100 * run['eval_top1']
    lines.append(f'| `{run["row"]}` | {before:.2f} | {after:.2f} | {after - before:+.2f} |')
  return lines


def _mixed_lines(cells: collections.OrderedDict) -> list[str]:
  """Mixed-precision runs: their BOPs against the budget and how many layers got each width."""
  runs = [run for cell_runs in cells.values() for run in cell_runs if 'mixed_precision' in run]
  if not runs:
    return []
  lines = ['', 'Mixed precision (body layers; first and last layer float, as in W2A2): BOPs '
           'per image against the budget (uniform W2A2), and layers per bit width.', '',
           '| run | sensitivity | BOPs | budget | weights: layers per bits | activations |',
           '| --- | --- | ---: | ---: | --- | --- |']
  for run in runs:
    mixed = run['mixed_precision']
    counts = [collections.Counter(bits[i] for bits in mixed['bits'].values()) for i in (0, 1)]
    w, a = (' '.join(f'{b}b:{n}' for b, n in sorted(c.items())) for c in counts)
    lines.append(f'| `{run["row"]}` | {mixed["sensitivity"]} | {mixed["bops"]:,} | '
                 f'{mixed["budget_bops"]:,} | {w} | {a} |')
  return lines


def _scale_from(args) -> Scale:
  scale = SCALES[args.scale]
  changes = {name: value for name, value in
             (('train_per_class', args.train_per_class), ('batch_size', args.batch_size),
              ('float_epochs', args.float_epochs), ('scratch_epochs', args.scratch_epochs))
             if value is not None}
  if args.fine_tune_epochs:
    changes['fine_tune_epochs'] = tuple(int(e) for e in args.fine_tune_epochs.split(','))
  if args.seeds:
    changes['seeds'] = tuple(int(s) for s in args.seeds.split(','))
  return dataclasses.replace(scale, **changes)


def _check_record_dir(scale: Scale, record_dir: Path) -> None:
  """Refuses to mix rows of two different scales in one record directory."""
  path = record_dir / SCALE_FILE
  if path.exists():
    recorded = json.loads(path.read_text())
    if recorded != scale.identity():
      raise SystemExit(f'{record_dir} holds a study at another scale ({recorded}); this one is '
                       f'{scale.identity()}. Pass another --record_dir.')
  else:
    record_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scale.identity(), indent=1) + '\n')


def _select(scale: Scale, args) -> list[Row]:
  """The rows to run, in order: `--only`'s, or those of `--groups` group by group; each after
  the rows it needs (the float run it fine-tunes from, its teacher)."""
  every = rows(scale)
  if args.only:
    wanted = args.only.split(',')
    known = {row.name for row in every} | {row.cell for row in every}
    unknown = [name for name in wanted if name not in known]
    if unknown:
      raise SystemExit(f'Unknown rows or cells {unknown}; choose from '
                       f'{sorted(r.name for r in every)}.')
    chosen = [row for row in every if row.name in wanted or row.cell in wanted]
  else:
    groups = args.groups.split(',')
    unknown = [group for group in groups if group not in GROUPS]
    if unknown:
      raise SystemExit(f'Unknown groups {unknown}; choose from {", ".join(GROUPS)}.')
    chosen = [row for group in groups for row in every if row.group == group]
  floats = {name for row in chosen for name in row.needs}
  return [row for row in every if row.name in floats and row not in chosen] + chosen


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--scale', choices=sorted(SCALES), default='cpu')
  parser.add_argument('--npz', default='',
                      help='CIFAR-100 training .npz to carve the data from (first call only).')
  parser.add_argument('--runs_dir', default='',
                      help='Workdirs and prepared data (default runs/budgeted_study/<scale>).')
  parser.add_argument('--record_dir', default='',
                      help="Rows' config, metrics, summary and results.md "
                           '(default experiments/budgeted_study/<scale>).')
  parser.add_argument('--groups', default=','.join(GROUPS),
                      help='Row groups to run, in this order (the float runs their fine-tunes '
                           'need first): ' + '; '.join(f'{g}: {text}' for g, text in
                                                       GROUPS.items()))
  parser.add_argument('--only', default='', help='Comma-separated rows or cells instead.')
  parser.add_argument('--workers', type=int, default=min(2, len(os.sched_getaffinity(0))))
  parser.add_argument('--time_budget_min', type=float, default=0.0,
                      help='Stop after this many minutes, checkpointing the runs in flight.')
  for name in ('train_per_class', 'batch_size', 'float_epochs', 'scratch_epochs'):
    parser.add_argument(f'--{name}', type=int, default=None, help='Overrides the scale.')
  parser.add_argument('--fine_tune_epochs', default='', help='Overrides the scale, e.g. 15,30.')
  parser.add_argument('--seeds', default='', help='Overrides the scale, e.g. 0,1,2.')
  parser.add_argument('--runlocal', action='store_true',
                      help='Tiny model, a few steps, the embedded sample: a smoke run.')
  parser.add_argument('--table', action='store_true', help='Only rewrite results.md.')
  parser.add_argument('--run_one', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  scale = _scale_from(args)
  # Absolute: the rows' configs record their data and init_from paths, which later calls, from
  # whichever directory, read back.
  args.runs_dir = str(Path(args.runs_dir or ROOT / 'runs' / 'budgeted_study' / scale.name)
                      .resolve())
  args.record_dir = str(Path(args.record_dir or RECORD_ROOT / scale.name).resolve())
  record_dir = Path(args.record_dir)
  if args.run_one:
    row = {row.name: row for row in rows(scale)}[args.run_one]
    raise SystemExit(run_one(row, scale, args))
  _check_record_dir(scale, record_dir)
  if args.table:
    print(write_table(scale, record_dir))
    return
  selected = _select(scale, args)
  Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
  if not args.runlocal:  # runlocal trains on the embedded sample.
    prepare_data(scale, args.npz, Path(args.runs_dir))
  left = run_study(selected, scale, args)
  print(write_table(scale, record_dir))
  if left:
    raise SystemExit(f'{len(left)} rows not finished: {[row.name for row in left]}. '
                     'Run the same command again to continue.')


if __name__ == '__main__':
  main()
