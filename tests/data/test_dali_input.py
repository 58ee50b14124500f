"""Tests for the DALI training input (dqnn.data.dali_input) and `config.input_backend`."""
import os
import pathlib
import subprocess
import sys

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from dqnn import run_config
from dqnn import train
from dqnn.data import dali_input
from dqnn.data import datasets
from dqnn.data import mock
from dqnn.data import pipeline
from train_testlib import patch_train_batches, restore_raw_state, sigterm_in_step, tiny_config

GLOBAL_BATCH = 8


@pytest.fixture(scope='session')
def imagenet_dir(tmp_path_factory) -> str:
  """A mock ImageNet: 32 random-noise JPEGs of 24-80 px (every fifth grayscale), 8 eval."""
  directory = str(tmp_path_factory.mktemp('mock_imagenet'))
  mock.write_mock_dataset('imagenet2012', directory, num_examples=32)
  return directory


def _batch_sharding() -> NamedSharding:
  return NamedSharding(Mesh(np.array(jax.devices()), ('data',)), P('data'))


def _dali_input(data_dir: str, image_size: int, seed: int = 3) -> dali_input.DaliInput:
  info = datasets.get_dataset_info('imagenet2012', data_dir)
  return dali_input.DaliInput(info, data_dir, _batch_sharding(), global_batch_size=GLOBAL_BATCH,
                              seed=seed, image_size=image_size)


def test_missing_dali_is_one_error_before_training(imagenet_dir, tmp_path, monkeypatch):
  for module in ('nvidia.dali', 'nvidia.dali.fn', 'nvidia.dali.types'):
    monkeypatch.setitem(sys.modules, module, None)  # `import` then raises ImportError.
  config = tiny_config('imagenet2012', data_dir=imagenet_dir, input_backend='dali')
  with pytest.raises(dali_input.DaliNotInstalledError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  assert str(error.value) == dali_input.MISSING_DALI
  assert "pip install -e '.[dali]'" in str(error.value)
  assert '--config.input_backend=grain' in str(error.value)
  assert not os.listdir(tmp_path)  # Nothing trained, nothing written.


def test_training_imports_no_dali():
  loaded = subprocess.run(
      [sys.executable, '-c', 'import sys, dqnn.train, dqnn.data.dali_input; '
       'print(sorted(m for m in sys.modules if m.startswith("nvidia.dali")))'],
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, check=True, capture_output=True, text=True)
  assert loaded.stdout.strip() == '[]'


@pytest.mark.parametrize('fields, hint', [
    ({'dataset': 'cifar100'}, 'decodes JPEG datasets only'),
    ({'dataset': 'fake', 'num_classes': 10, 'image_size': 32}, 'decodes JPEG datasets only'),
    ({'dataset': 'imagenet2012', 'input_on_device': True}, '--config.input_on_device=False'),
])
def test_dali_backend_refuses_what_it_cannot_feed(fields, hint):
  config = tiny_config('imagenet2012', input_backend='dali')
  config.update(fields)
  with pytest.raises(run_config.ConfigError, match='input_backend=grain') as error:
    run_config.validate(config)
  assert hint in str(error.value)
  assert str(error.value).count('\n') == 1  # One problem, one line.


def test_runs_saved_before_the_field_resume_as_grain():
  config = tiny_config('imagenet2012')
  saved = run_config.as_json(config)
  del saved['input_backend']
  assert run_config.changed_fields(saved, config) == []
  config.input_backend = 'dali'
  assert run_config.changed_fields(saved, config) == ["input_backend: was '(absent)', now 'dali'"]


def test_unknown_backend_is_refused():
  with pytest.raises(run_config.ConfigError, match="'grain', 'dali'"):
    run_config.validate(tiny_config('imagenet2012', input_backend='nvjpeg'))


def test_dali_batches_hold_grain_examples_cropped_as_pillow_crops_them(imagenet_dir):
  pytest.importorskip('nvidia.dali')
  size = 64
  dali = _dali_input(imagenet_dir, size)
  info = datasets.get_dataset_info('imagenet2012', imagenet_dir)
  reference = iter(pipeline.train_dataset(info, imagenet_dir, global_batch_size=GLOBAL_BATCH,
                                          seed=3, image_size=size, decoder='pillow'))
  differences = []
  for _ in range(4):  # One epoch: all 32 examples.
    got, want = dali.next(), next(reference)
    assert got['image'].shape == (GLOBAL_BATCH, size, size, 3)
    assert got['image'].dtype == np.uint8 and got['label'].dtype == np.int32
    assert got['image'].sharding == _batch_sharding()
    np.testing.assert_array_equal(got['label'], want['label'])  # The same order.
    differences += list(np.abs(np.asarray(got['image'], np.float32) - want['image'])
                        .mean(axis=(1, 2, 3)))
  # Mean absolute difference per image in grey levels (of 255), on these noise images: measured
  # 1.0 mean, 2.2 worst (different IDCTs; Pillow's reduced-scale decode where a crop shrinks).
  # A different window or flip would differ by ~80.
  assert np.mean(differences) < 2 and np.max(differences) < 4, differences


def test_set_state_continues_with_exactly_the_next_batch(imagenet_dir):
  pytest.importorskip('nvidia.dali')
  straight = _dali_input(imagenet_dir, 16)
  for _ in range(5):  # Past the first epoch's 4 batches, into the next permutation.
    straight.next()
  state = straight.get_state()
  assert state == {'next_index': 5}
  resumed = _dali_input(imagenet_dir, 16)
  resumed.set_state(state)
  for _ in range(2):
    want, got = straight.next(), resumed.next()
    for key in ('image', 'label'):
      np.testing.assert_array_equal(got[key], want[key])


_TWO_DEVICE_BATCH = '''
import sys
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jax
from dqnn.data import dali_input, datasets
data_dir, out = sys.argv[1:]
assert jax.local_device_count() == 2
sharding = NamedSharding(Mesh(np.array(jax.devices()), ('data',)), P('data'))
batch = dali_input.DaliInput(datasets.get_dataset_info('imagenet2012', data_dir), data_dir,
                             sharding, global_batch_size=8, seed=3, image_size=16).next()
assert [s.data.shape[0] for s in batch['image'].addressable_shards] == [4, 4]
np.savez(out, **{key: np.asarray(value) for key, value in batch.items()})
'''


def test_each_device_decodes_its_rows_of_the_same_batch(imagenet_dir, tmp_path):
  pytest.importorskip('nvidia.dali')
  out = tmp_path / 'batch.npz'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
         'PYTHONPATH': os.pathsep.join([str(pathlib.Path(__file__).resolve().parents[2]),
                                        os.environ.get('PYTHONPATH', '')])}
  subprocess.run([sys.executable, '-c', _TWO_DEVICE_BATCH, imagenet_dir, str(out)], env=env,
                 check=True)
  two_devices, one_device = np.load(out), _dali_input(imagenet_dir, 16).next()
  for key in ('image', 'label'):
    np.testing.assert_array_equal(two_devices[key], one_device[key])


def test_set_state_refuses_a_state_without_position(imagenet_dir):
  pytest.importorskip('nvidia.dali')
  with pytest.raises(ValueError, match='next_index'):
    _dali_input(imagenet_dir, 16).set_state({'workers_state': {}})


def test_dali_training_resumes_to_the_state_of_a_straight_run(imagenet_dir, tmp_path,
                                                              monkeypatch):
  pytest.importorskip('nvidia.dali')
  config = tiny_config('imagenet2012', data_dir=imagenet_dir, input_backend='dali',
                       num_train_steps=3)
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  train.train_and_evaluate(config, straight)
  with monkeypatch.context() as patch:
    patch_train_batches(patch, sigterm_in_step(1))
    assert train.train_and_evaluate(config, resumed)['step'] == 2
  assert train.train_and_evaluate(config, resumed)['step'] == 3
  jax.tree.map(np.testing.assert_array_equal, restore_raw_state(resumed, 3),
               restore_raw_state(straight, 3))
