r"""ImageNet (ILSVRC-2012), MobileNetV2, float (32-bit) reference.

Command (from the repository root; the dataset prepared as in dqnn/data/prepare.py):
  python -m dqnn.main --config=configs/imagenet_mobilenetv2_fp.py \
      --workdir=$HOME/dqnn/imagenet_mobilenetv2_fp
Expected top-1: anchor from the literature: 71.88% top-1 (torchvision reference weights); not
measured here.
Runtime: not measured yet (450,360 steps = 90 epochs of 1,281,167 images at batch 256).
Recipe: SGD momentum 0.9, lr 0.1 x batch/256, batch 256, cosine, 90 epochs, wd 1e-4 (He et al.
2016; Goyal et al. 2017); wd 4e-5 (Sandler et al. 2018).
"""
from configs import base


def get_config(arg=None):
  return base.imagenet('mobilenet_v2', arg=arg)
