"""Tests for dqnn.data.on_device: a split held on the devices, batched inside the step."""
import collections
import subprocess
import sys
import textwrap

import jax
import numpy as np
from jax.sharding import Mesh

import dqnn.data as data
from dqnn.data import train_input
from dqnn.data import transforms


def _batches(device_data, steps):
  make_batch = jax.jit(device_data.make_batch)
  return [jax.device_get(make_batch(device_data.inputs(step))) for step in steps]


def test_batches_are_augmented_examples_and_each_epoch_covers_the_split():
  info = data.get_dataset_info(data.SAMPLE)
  mesh = Mesh(np.array(jax.devices()[:1]), ('data',))
  device_data = data.DeviceTrainData(info, None, mesh, global_batch_size=100, seed=0)
  assert device_data.steps_per_epoch == 5
  epoch = _batches(device_data, range(5))
  labels = np.concatenate([b['label'] for b in epoch])
  # 5 training images per class in the sample: one epoch sees each exactly once.
  assert collections.Counter(labels.tolist()) == collections.Counter(
      {c: 5 for c in range(100)})
  source = data.datasets.open_split(data.SAMPLE, None, 'train', 0, 500)
  image, label = epoch[0]['image'][0], epoch[0]['label'][0]
  candidates = source.images[source.labels == label]
  crops = [transforms.crop_and_flip(candidates, np.full(len(candidates), dy),
                                    np.full(len(candidates), dx), np.full(len(candidates), f))
           for dy in range(9) for dx in range(9) for f in (False, True)]
  assert any((c == image).all(axis=(1, 2, 3)).any() for c in crops)
  # A pure function of the step: asking again gives the same batch; the next epoch differs.
  np.testing.assert_array_equal(_batches(device_data, [3])[0]['image'], epoch[3]['image'])
  assert not np.array_equal(_batches(device_data, [5])[0]['label'], epoch[0]['label'])


def test_sharded_over_devices_each_device_reads_its_own_shard():
  script = textwrap.dedent('''
      import collections, jax, numpy as np
      from jax.sharding import Mesh
      import dqnn.data as data
      info = data.get_dataset_info(data.SAMPLE)
      mesh = Mesh(np.array(jax.devices()), ('data',))
      device_data = data.DeviceTrainData(info, None, mesh, global_batch_size=40, seed=1)
      assert device_data.per_device == 125 and device_data.steps_per_epoch == 12
      make_batch = jax.jit(device_data.make_batch)
      batch = make_batch(device_data.inputs(0))
      assert batch['image'].sharding.spec == jax.sharding.PartitionSpec('data')
      source = data.datasets.open_split(data.SAMPLE, None, 'train', 0, 500)
      labels = np.asarray(batch['label'])
      for shard in range(4):
        own = set(source.labels[shard * 125:(shard + 1) * 125].tolist())
        assert set(labels[shard * 10:(shard + 1) * 10].tolist()) <= own
      print('ok')
  ''')
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=4', 'JAX_PLATFORMS': 'cpu'}
  import os
  r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                     env={**os.environ, **env}, timeout=300)
  assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stderr[-3000:]


def test_resuming_on_another_device_count_warns_that_the_batches_change(caplog):
  info = data.get_dataset_info(data.SAMPLE)
  mesh = Mesh(np.array(jax.devices()[:1]), ('data',))
  device_input = train_input.DeviceInput(
      data.DeviceTrainData(info, None, mesh, global_batch_size=100, seed=0))
  saved = device_input.get_state()
  assert saved == {'next_step': 0, 'num_devices': 1}
  device_input.set_state(saved)
  assert 'devices' not in caplog.text
  device_input.set_state({'next_step': 7, 'num_devices': 2})
  assert 'trained to step 7 on 2 devices and resumes on 1' in caplog.text
  assert 'input_on_device=False' in caplog.text
  assert device_input.get_state()['next_step'] == 7
