r"""CIFAR-100, AlexNet (CIFAR variant), DQ W3A3 (first and last layer float).

Command (from the repository root):
  python -m dqnn.main --config=configs/cifar100_alexnet_w3a3.py \
      --workdir=$HOME/dqnn/cifar100_alexnet_w3a3
Expected top-1: not measured yet (float reference: configs/cifar100_alexnet_fp.py).
Runtime: not measured yet (70,200 steps = 200 epochs of 45,000 images at batch 128).
Recipe: SGD momentum 0.9, lr 0.1 at batch 128, wd 5e-4, cosine, 200 epochs: the common CIFAR
recipe (He et al. 2016 with the cosine schedule of Loshchilov & Hutter 2017, as in DeVries &
Taylor 2017); quantized from scratch, or from the float run with --config.init_from=<its
workdir>.
CIFAR-100 'test' here is a held-out carve of the training file (see dqnn/data/prepare.py);
literature numbers use the official test set.
"""
from configs import base


def get_config(arg=None):
  return base.cifar100('cifar_alexnet', w_bits=3, a_bits=3, arg=arg)
