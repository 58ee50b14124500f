r"""ImageNet (ILSVRC-2012), MobileNetV2, DQ W2A2 (first and last layer float).

Command (from the repository root; the dataset prepared as in dqnn/data/prepare.py):
  python -m dqnn.main --config=configs/imagenet_mobilenetv2_w2a2.py \
      --workdir=$HOME/dqnn/imagenet_mobilenetv2_w2a2 \
      --config.init_from=$HOME/dqnn/imagenet_mobilenetv2_fp
Expected top-1: not measured yet (no W2A2 anchor in LQ-Nets or LSQ for this model).
Runtime: not measured yet (450,360 steps = 90 epochs of 1,281,167 images at batch 256).
Recipe: fine-tune from the float run, SGD momentum 0.9, lr 0.01 x batch/256 (LSQ, Esser et al.
2020), batch 256, cosine, 90 epochs, wd 4e-5 (Sandler et al. 2018).
Kept from the literature, consistent with dqnn's CIFAR-100 measurements; no ImageNet run
(evidence: configs/base.py, `imagenet`).
Teacher: none. Where measured (CIFAR-100 ResNet-20 W2A2/W2A1/W3A3, study scale `cpu`, weak
float teachers: docs/results.md) a teacher lowered every paired fine-tune; this config with
a teacher is not measured. --config.distill.teacher_workdir=<a finished float run> adds one.
"""
from configs import base


def get_config(arg=None):
  return base.imagenet('mobilenet_v2', w_bits=2, a_bits=2, arg=arg)
