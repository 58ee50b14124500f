"""`run_builder.build`: one place turns a config into a run's objects; nothing else reads it."""
import ast
import pathlib

import jax
import numpy as np
from jax.sharding import Mesh

from dqnn import data
from dqnn import run_builder
from dqnn import runs
from dqnn import train
from train_testlib import tiny_config


def _config_uses(path: pathlib.Path) -> tuple[list[str], list[str]]:
  """Where `path` imports ml_collections, and where it reads a field of a name `config`."""
  imports, reads = [], []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      modules = [node.module or '']
    else:
      modules = []
    if any(module.split('.')[0] == 'ml_collections' for module in modules):
      imports.append(f'{path.name}:{node.lineno}')
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id == 'config'):
      reads.append(f'{path.name}:{node.lineno} config.{node.attr}')
  return imports, reads


def test_data_modules_take_plain_arguments():
  package = pathlib.Path(data.__file__).resolve().parent
  for path in sorted(package.rglob('*.py')):
    imports, reads = _config_uses(path)
    assert not imports + reads, f'dqnn/data takes plain arguments, not a config: {imports + reads}'


def test_the_training_loop_reads_no_config_field():
  _, reads = _config_uses(pathlib.Path(train.__file__))
  assert not reads, f'dqnn/train.py reads the config; build the object in run_builder: {reads}'


def test_build_takes_image_size_and_classes_from_runs():
  config = tiny_config('fake', num_classes=7, image_size=32)
  run = run_builder.build(config, Mesh(np.array(jax.devices()), ('data',)))
  assert (run.info.num_classes, run.info.image_size) == (runs.num_classes(config),
                                                         runs.image_size(config)) == (7, 32)
  assert run.model.num_classes == 7
  assert (run.total_steps, run.global_batch_size, run.teacher) == (4, 8, None)
  assert (run.loop.log_every_steps, run.loop.checkpoint_every_steps) == (1, 2)
  batch = run.train_input.make_batch(run.train_input.next())
  assert batch['image'].shape == (8, 32, 32, 3)
  assert int(batch['label'].max()) < 7
