"""Trains the tiny CIFAR config on every visible device:
`sharded_train.py DATA_DIR WORKDIR [TEACHER_WORKDIR]` (with a teacher: distilled from it).

Run by test_sharded_training.py in a subprocess with 4 virtual CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4), since the device count is fixed at start.
"""
import sys

import jax

from dqnn import train
from train_testlib import tiny_config


def config(data_dir, teacher=''):
  config = tiny_config(data_dir=data_dir)
  if teacher:
    config.distill.update(teacher_workdir=teacher, temperature=2.0, weight=0.5)
  return config


def main():
  data_dir, workdir, *teacher = sys.argv[1:]
  train.train_and_evaluate(config(data_dir, *teacher), workdir)
  print(f'trained on {jax.device_count()} devices')


if __name__ == '__main__':
  main()
