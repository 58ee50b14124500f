"""Throughput on synthetic data: ResNet-50 DQ W2A2 at 224x224, no dataset needed.

Command (from the repository root):
  python -m dqnn.main --config=configs/fake_data_throughput.py --workdir=/tmp/dqnn/fake
Reports steps/s (TensorBoard `steps_per_sec` and `metrics.jsonl`); accuracy is meaningless.
Expected: not measured yet. Runtime: 200 steps; not measured yet.
Recipe: the ImageNet W2A2 recipe of configs/base.py in bfloat16 (as the Flax ImageNet example's
fake-data benchmark), without evaluation.
"""
from configs import base


def get_config(arg=None):
  config = base.imagenet('resnet50', w_bits=2, a_bits=2, arg=arg)
  config.dataset = 'fake'
  config.init_from = 'none'  # Throughput only: random weights serve.
  config.num_classes = 1000
  config.image_size = config.image_size or 224
  config.dtype = 'bfloat16'
  if config.num_train_steps <= 0:
    config.num_train_steps = 200
  config.log_every_steps = min(config.log_every_steps, 50)
  config.checkpoint_every_steps = 0
  return config
