r"""CIFAR-10, ResNet-20, DQ W2A2 (first and last layer float).

Command (from the repository root):
  python -m dqnn.main --config=configs/cifar10_resnet20_w2a2.py \
      --workdir=$HOME/dqnn/cifar10_resnet20_w2a2
Expected top-1: not measured yet (float reference: configs/cifar10_resnet20_fp.py).
Runtime: not measured yet (200 epochs at batch 128: 77,200 steps on the prepared
49,500-image split, 78,000 on the official 50,000 that download=True fetches).
Recipe: the CIFAR-100 recipe unchanged (configs/base.py, `cifar`): SGD momentum 0.9, lr 0.1 at
batch 128, wd 5e-4, cosine, 200 epochs, quantized from scratch.
Evaluation split: with data from `python -m dqnn.data.prepare --source=npz --dataset=cifar10`,
'test' is a held-out carve of the training file; download=True gives the official test set,
which literature numbers use.
Smoke run: runlocal keeps CIFAR-10 (there is no embedded CIFAR-10 sample), so pass the
data_dir of a prepared one: --config=configs/cifar10_resnet20_w2a2.py:runlocal
--config.data_dir=$TFDS_DATA_DIR.
Teacher: none. Where measured (CIFAR-100 ResNet-20 W2A2/W2A1/W3A3, study scale `cpu`, weak
float teachers: docs/results.md) a teacher lowered every paired fine-tune; this config with
a teacher is not measured. --config.distill.teacher_workdir=<a finished float run> adds one.
"""
from configs import base


def get_config(arg=None):
  return base.cifar('cifar10', 'cifar_resnet20', w_bits=2, a_bits=2, arg=arg)
