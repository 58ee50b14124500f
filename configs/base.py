"""Shared config fields and the builders the experiment configs call.

Every experiment file is `get_config(arg=None)` returning one of these builders' configs.
`arg='runlocal'` (`--config=configs/x.py:runlocal`) shrinks any config to a few steps with a
tiny batch for a quick CPU run. Fields are primitives or ConfigDicts only.
"""
import functools

import ml_collections

from dqnn.data import specs
from dqnn.models import CIFAR_MODELS, IMAGENET_MODELS, MODELS
from dqnn.quantizers import FULL_PRECISION

RUNLOCAL = 'runlocal'


def get_base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every experiment (CIFAR-100 scale); builders override the recipe."""
  config = ml_collections.ConfigDict()

  # Data. data_dir '' = $TFDS_DATA_DIR or the TFDS default; image_size 0 = the dataset's.
  config.dataset = 'cifar100'  # A name in dqnn.data.specs.SUPPORTED_DATASETS, or 'fake'.
  config.data_dir = ''
  config.download = False  # Only the CIFARs can be downloaded (needs internet).
  config.image_size = 0
  # CIFAR-size splits can live on the accelerators, batched and augmented in the step.
  config.input_on_device = False
  # Host pipeline: batch-making processes (0 = threads only); each runs one thread per core it
  # gets (cores / processes).
  config.input_workers = 0
  # JPEG datasets: 'grain' (libjpeg-turbo/Pillow on host threads) or 'dali' (NVIDIA DALI: nvJPEG
  # on the GPUs; the `dali` extra). The same examples, crop windows and flips either way.
  config.input_backend = 'grain'
  config.num_classes = 0  # Only for dataset 'fake'; real datasets know theirs.

  # Model: a name from dqnn.models, compute dtype, and the quantization policy.
  config.model = 'cifar_resnet20'
  config.dtype = 'float32'  # 'float32' | 'bfloat16' (activations; parameters stay float32)
  config.quant = ml_collections.ConfigDict({
      'w_bits': FULL_PRECISION,
      'a_bits': FULL_PRECISION,
      'weight_quantizer': 'dq',
      'act_quantizer': 'dq',
      'weight_options': {},
      'act_options': {},
      'first_layer': 'float',  # 'float' | '8bit'
      'last_layer': 'float',  # 'float' | '8bit'
      'overrides': {},  # {path glob: {field: value}} per-layer exceptions.
  })

  # Optimisation. The learning rate is `learning_rate * global_batch_size /
  # learning_rate_batch_size` (linear scaling); see dqnn.optim.create_optimizer for the rest.
  config.global_batch_size = 128
  config.num_epochs = 200
  config.num_train_steps = -1  # > 0 overrides num_epochs.
  config.optimizer = ml_collections.ConfigDict({
      'learning_rate': 0.1,
      'learning_rate_batch_size': 128,
      'momentum': 0.9,
      'nesterov': False,
      'weight_decay': 5e-4,
      'level_lr_scale': 1.0,
      'level_gradient': 'mean',
      'quantizer_optimizer': 'adam',
      'quantizer_lr_scale': 0.01,
      'residual': True,
      'level_update': 'gradient',
  })
  config.schedule = ml_collections.ConfigDict({
      'name': 'cosine',  # 'cosine' | 'step' | 'constant'
      'warmup_epochs': 0.0,
      'decay_epochs': (),  # 'step': multiply by decay_factor at each of these epochs.
      'decay_factor': 0.1,
  })
  config.label_smoothing = 0.0
  # After the last step, replace BatchNorm running statistics by the mean batch statistics of
  # the final network over this many training batches (0 = keep the moving averages); see
  # dqnn/bn_reestimation.py. The final eval before it is logged as 'eval_before_bn_reestimation'.
  config.bn_reestimation_batches = 0
  # Workdir of a float run to initialise weights from; '' or 'none' = from scratch. A recipe
  # that only makes sense as a fine-tune sets 'required': the run then needs one or 'none'.
  config.init_from = ''
  # Distillation (dqnn/distill.py, docs/method.md): the loss becomes (1 - weight) * label CE +
  # weight * temperature² * KL(teacher || student) at that temperature; weight 1 = label-free.
  # The teacher is a finished run's workdir (any model, e.g. a larger float network), restored
  # from its latest checkpoint, run in eval mode in teacher_dtype; '' = no teacher.
  config.distill = ml_collections.ConfigDict({
      'teacher_workdir': '',
      'temperature': 1.0,
      'weight': 1.0,
      'teacher_dtype': 'float32',  # 'float32' | 'bfloat16'
  })
  config.seed = 0

  # Evaluation and bookkeeping (in steps; eval 0 = only at the end).
  config.eval_batch_size = 500
  config.log_every_steps = 100
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 3
  # At each eval, a TensorBoard image per quantized layer: weight histogram with its levels.
  config.weight_images = True
  config.multi_host = False  # Call jax.distributed.initialize() (TPU pods, multi-node GPU).
  # Faults (docs/failure_behaviour.md). A corrupt latest checkpoint: 'fallback' moves it aside
  # and resumes from the previous one; 'stop' ends the run with an error.
  config.on_corrupt_checkpoint = 'fallback'
  # A checkpoint without its digest (saved by a dqnn older than digests, or damaged) cannot be
  # verified and counts as corrupt; True restores it unverified.
  config.trust_checkpoints_without_digest = False
  # Resume even though the config differs from the workdir's config.json beyond the fields
  # dqnn.run_config.SCHEMA marks resumable; the old config is kept as config.<step>.json.
  config.allow_config_change = False
  return config


def _quant(config: ml_collections.ConfigDict, w_bits: int, a_bits: int) -> None:
  config.quant.w_bits = w_bits
  config.quant.a_bits = a_bits


def cifar(dataset: str, model: str, w_bits: int = FULL_PRECISION, a_bits: int = FULL_PRECISION,
          arg: str | None = None) -> ml_collections.ConfigDict:
  """CIFAR (`dataset` 'cifar10' or 'cifar100'): SGD momentum 0.9, lr 0.1 at batch 128, wd 5e-4,
  cosine, 200 epochs.

  The common CIFAR recipe (e.g. DeVries & Taylor 2017 / kuangliu pytorch-cifar); quantized
  runs train from scratch with the same recipe unless `init_from` names a float run.

  From scratch is chosen by measurement on CIFAR-100 (docs/results.md, budgeted study): for the
  same total epochs it beat fine-tuning a float run at lr 0.01 for every method (ResNet-20 W2A2:
  DQ, LQ-Nets, LSQ by 2.1, 2.4, 3.4 points on a GPU, one seed; 1.0-3.0 points at dqnn's two CPU
  scales, two seeds). For fine-tunes, lr 0.03 was ahead of 0.01 at both CPU scales (outside the
  seed ranges at the larger); 0.1 after a warm-up was further ahead at the larger scale but
  behind at the other.
  """
  if model not in CIFAR_MODELS:
    raise ValueError(f'Not a CIFAR model: {model!r}; choose one of {CIFAR_MODELS}.')
  dataset_spec = specs.spec(dataset)
  if not dataset_spec.in_memory:
    raise ValueError(f'Not a CIFAR-size dataset: {dataset!r}.')
  config = get_base_config()
  config.dataset = dataset
  config.download = bool(dataset_spec.download_host)
  config.input_on_device = True
  config.model = model
  _quant(config, w_bits, a_bits)
  return _variant(config, arg)


cifar100 = functools.partial(cifar, 'cifar100')


def imagenet(model: str, w_bits: int = FULL_PRECISION, a_bits: int = FULL_PRECISION,
             arg: str | None = None) -> ml_collections.ConfigDict:
  """ImageNet: SGD momentum 0.9, lr 0.1 x batch/256, cosine, batch 256.

  Float: 90 epochs, wd 1e-4 (Goyal et al. 2017; He et al. 2016). Quantized: fine-tune from the
  float run (`--config.init_from=<float workdir>`) for 90 epochs at lr 0.01 x batch/256 (LSQ,
  Esser et al. 2020), wd 1e-4, or 5e-5 for <= 2 bits (LQ-Nets, Zhang et al. 2018).
  MobileNetV2 uses wd 4e-5 (Sandler et al. 2018); AlexNet lr 0.01 x batch/256 (torchvision).

  The quantized fine-tune is kept from the literature, consistent with dqnn's CIFAR-100
  measurements (docs/results.md, budgeted study; no ImageNet run): training from scratch beat a
  lr-0.01 fine-tune for the same *total* epochs, but a fine-tune with as many quantized epochs as
  from scratch tied it at both CPU scales. Here the float model exists already, so the fine-tune
  is the cheaper of two equals. Its lr stays LSQ's: on CIFAR higher rates beat 0.01 in 2-epoch
  fine-tunes (0.03 by 0.7 points, 0.1 after a warm-up by 1.3), which says little about a
  90-epoch cosine schedule.
  """
  if model not in IMAGENET_MODELS:
    raise ValueError(f'Not an ImageNet model: {model!r}; choose one of {IMAGENET_MODELS}.')
  config = get_base_config()
  config.dataset = 'imagenet2012'
  # A process holds the GIL ~45-75 us an image (at most 14-22k img/s, docs/results.md); eight
  # H200s take ~140k img/s.
  config.input_workers = 16
  config.model = model
  _quant(config, w_bits, a_bits)
  quantized = min(w_bits, a_bits) < FULL_PRECISION
  if quantized:
    config.init_from = 'required'
  config.global_batch_size = 256
  config.num_epochs = 90
  config.optimizer.learning_rate_batch_size = 256
  config.optimizer.learning_rate = 0.01 if quantized or model == 'alexnet' else 0.1
  config.optimizer.weight_decay = 5e-5 if min(w_bits, a_bits) <= 2 else 1e-4
  if model == 'mobilenet_v2':
    config.optimizer.weight_decay = 4e-5
  config.eval_batch_size = 500
  config.log_every_steps = 500
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  return _variant(config, arg)


def _variant(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  if not arg:
    return config
  if arg != RUNLOCAL:
    raise ValueError(f'Unknown config argument {arg!r}; the only one is {RUNLOCAL!r}.')
  return runlocal(config)


def runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A few steps at batch 8 with a tiny model: checks that a config runs end to end on a CPU.

  A dataset with an embedded sample (CIFAR-100: 500 train / 100 eval real images shipped inside
  dqnn) switches to it, so no download or prepare is needed; --config.dataset=cifar100 uses the
  real data. Others (CIFAR-10) keep their dataset: pass --config.data_dir of a prepared one.
  """
  config.model = MODELS[config.model].tiny or config.model
  if config.init_from == 'required':  # A full-size float run cannot initialise the tiny model.
    config.init_from = 'none'
  sample = specs.SPECS[config.dataset].sample if config.dataset in specs.SPECS else ''
  if sample:
    config.dataset = sample
    config.download = False
  config.input_workers = 0
  config.global_batch_size = 8
  config.eval_batch_size = 100
  config.num_train_steps = 4
  config.schedule.warmup_epochs = 0.0  # A warm-up would outlast the 4 steps.
  config.log_every_steps = 1
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2
  return config
