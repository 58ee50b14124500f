r"""CIFAR-10, ResNet-20, float (32-bit) reference.

Command (from the repository root):
  python -m dqnn.main --config=configs/cifar10_resnet20_fp.py \
      --workdir=$HOME/dqnn/cifar10_resnet20_fp
Expected top-1: anchor from the literature: ≈91-92% top-1 (He et al. 2016 report 91.25% for
CIFAR-style ResNet-20; approximate, not measured here).
Runtime: not measured yet (200 epochs at batch 128: 77,200 steps on the prepared
49,500-image split, 78,000 on the official 50,000 that download=True fetches).
Recipe: the CIFAR-100 recipe unchanged (configs/base.py, `cifar`): SGD momentum 0.9, lr 0.1 at
batch 128, wd 5e-4, cosine, 200 epochs.
Evaluation split: with data from `python -m dqnn.data.prepare --source=npz --dataset=cifar10`,
'test' is a held-out carve of the training file; download=True gives the official test set,
which literature numbers use.
"""
from configs import base


def get_config(arg=None):
  return base.cifar('cifar10', 'cifar_resnet20', arg=arg)
