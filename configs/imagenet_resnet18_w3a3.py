r"""ImageNet (ILSVRC-2012), ResNet-18, DQ W3A3 (first and last layer float).

Command (from the repository root; the dataset prepared as in dqnn/data/prepare.py):
  python -m dqnn.main --config=configs/imagenet_resnet18_w3a3.py \
      --workdir=$HOME/dqnn/imagenet_resnet18_w3a3 \
      --config.init_from=$HOME/dqnn/imagenet_resnet18_fp
Expected top-1: anchor from the literature: 68.2% top-1 for LQ-Nets W3A3 (Zhang et al., ECCV
2018), the baseline DQ should match or beat; not measured here.
Runtime: not measured yet (450,360 steps = 90 epochs of 1,281,167 images at batch 256).
Recipe: fine-tune from the float run, SGD momentum 0.9, lr 0.01 x batch/256 (LSQ, Esser et al.
2020), batch 256, cosine, 90 epochs, wd 1e-4.
Kept from the literature, consistent with dqnn's CIFAR-100 measurements (docs/results.md,
budgeted study; no ImageNet run): training from scratch beat a lr-0.01 fine-tune for the same
*total* epochs, but a fine-tune with as many quantized epochs as from scratch tied it at both CPU
scales. Here the float model exists already, so the fine-tune is the cheaper of two equals. Its
lr stays LSQ's: on CIFAR higher rates beat 0.01 in 2-epoch fine-tunes (0.03 by 0.7 points, 0.1
after a warm-up by 1.3), which says little about a 90-epoch cosine schedule; untested here.
"""
from configs import base


def get_config(arg=None):
  return base.imagenet('resnet18', w_bits=3, a_bits=3, arg=arg)
