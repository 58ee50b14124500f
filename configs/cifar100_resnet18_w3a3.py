r"""CIFAR-100, ResNet-18 (CIFAR stem), DQ W3A3 (first and last layer float).

Command (from the repository root):
  python -m dqnn.main --config=configs/cifar100_resnet18_w3a3.py \
      --workdir=$HOME/dqnn/cifar100_resnet18_w3a3
Expected top-1: not measured yet (float reference: configs/cifar100_resnet18_fp.py).
Runtime: not measured yet (200 epochs at batch 128: 70,200 steps on the prepared
45,000-image split, 78,000 on the official 50,000 that download=True fetches).
Recipe: SGD momentum 0.9, lr 0.1 at batch 128, wd 5e-4, cosine, 200 epochs: the common CIFAR
recipe (He et al. 2016 with the cosine schedule of Loshchilov & Hutter 2017, as in DeVries &
Taylor 2017); quantized from scratch, chosen by measurement (evidence: configs/base.py,
`cifar100`). To fine-tune instead: --config.init_from=<float workdir>
--config.optimizer.learning_rate=0.03, the fine-tune rate that measured best.
Evaluation split: with data from dqnn.data.prepare, 'test' is a held-out carve of the training
file; download=True gives the official test set, which literature numbers use.
Teacher: none. Where measured (CIFAR-100 ResNet-20 W2A2/W2A1/W3A3, study scale `cpu`, weak
float teachers: docs/results.md) a teacher lowered every paired fine-tune; this config with
a teacher is not measured. --config.distill.teacher_workdir=<a finished float run> adds one.
"""
from configs import base


def get_config(arg=None):
  return base.cifar100('cifar_resnet18', w_bits=3, a_bits=3, arg=arg)
