r"""CIFAR-100, ResNet-20, DQ W4A4 (first and last layer float).

Command (from the repository root):
  python -m dqnn.main --config=configs/cifar100_resnet20_w4a4.py \
      --workdir=$HOME/dqnn/cifar100_resnet20_w4a4
Expected top-1: not measured yet (float reference: configs/cifar100_resnet20_fp.py).
Runtime: not measured yet (200 epochs at batch 128: 70,200 steps on the prepared
45,000-image split, 78,000 on the official 50,000 that download=True fetches).
Recipe: SGD momentum 0.9, lr 0.1 at batch 128, wd 5e-4, cosine, 200 epochs: the common CIFAR
recipe (He et al. 2016 with the cosine schedule of Loshchilov & Hutter 2017, as in DeVries &
Taylor 2017); quantized from scratch, chosen by measurement: for the same total epochs it beat
fine-tuning a float run at lr 0.01 for every method (ResNet-20 W2A2: DQ, LQ-Nets, LSQ by 2.1, 2.4,
3.4 points on a GPU, one seed; 1.0-3.0 points at dqnn's two CPU scales, two seeds; docs/results.md,
budgeted study). To fine-tune instead: --config.init_from=<float workdir>
--config.optimizer.learning_rate=0.03: ahead of 0.01 at both CPU scales (outside the seed ranges
at the larger); 0.1 after a warm-up was further ahead at the larger scale but behind at the other.
Evaluation split: with data from dqnn.data.prepare, 'test' is a held-out carve of the training
file; download=True gives the official test set, which literature numbers use.
"""
from configs import base


def get_config(arg=None):
  return base.cifar100('cifar_resnet20', w_bits=4, a_bits=4, arg=arg)
