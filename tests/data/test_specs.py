"""Every dataset record is consistent, and the code reads the records, not dataset names."""
import pathlib
import re

import numpy as np
import pytest

from dqnn.data import datasets
from dqnn.data import specs
from dqnn.data import transforms

DATA_PACKAGE = pathlib.Path(specs.__file__).parent


@pytest.mark.parametrize('name', specs.SUPPORTED_DATASETS)
def test_record_is_consistent(name):
  spec = specs.spec(name)
  assert spec.name == name
  assert len(spec.mean) == len(spec.std) == 3
  assert all(0 < m < 1 for m in spec.mean) and all(0 < s < 1 for s in spec.std)
  assert spec.num_classes > 1 and spec.image_size > 0
  assert spec.train_split != spec.eval_split
  assert spec.augmentation in (specs.CIFAR_AUGMENTATION, specs.IMAGENET_AUGMENTATION)
  assert spec.source in (specs.NPZ, specs.IMAGE_FOLDER, specs.EMBEDDED)
  if spec.source == specs.EMBEDDED:
    assert not spec.prepare_command and not spec.download_host
  else:
    command = datasets.prepare_command(name, '/data dir')
    assert command.startswith(f'python -m dqnn.data.prepare --source={spec.source} ')
    assert f"--data_dir='/data dir'" in command
    # The command builds this dataset: it names it, or it is its source's default.
    assert (f'--dataset={name} ' in command) == (specs.DEFAULT_FOR_SOURCE[spec.source] != name)
  if spec.sample:
    assert specs.spec(spec.sample).source == specs.EMBEDDED
    assert specs.spec(spec.sample).num_classes == spec.num_classes
  if spec.coarse_labels:
    assert len(spec.coarse_labels) == spec.num_classes
  np.testing.assert_array_equal(transforms.INPUT_STATISTICS[datasets.input_statistics(name)],
                                (spec.mean, spec.std))


def test_cifar10_statistics_and_sizes():
  spec = specs.spec('cifar10')
  assert (spec.num_classes, spec.image_size, spec.in_memory) == (10, 32, True)
  assert spec.mean == (0.4914, 0.4822, 0.4465) and spec.std == (0.2470, 0.2435, 0.2616)
  assert not spec.sample and not spec.coarse_labels  # TFDS cifar10: id, image, label.


def test_fake_data_is_standardised_with_imagenet_statistics():
  assert datasets.input_statistics(specs.FAKE) == 'imagenet2012'


def test_a_record_the_pipelines_cannot_serve_is_refused():
  with pytest.raises(ValueError, match='in_memory datasets take CIFAR augmentation'):
    specs.DatasetSpec(name='x', title='X', num_classes=2, image_size=32, train_split='train',
                      eval_split='test', mean=(0.5,) * 3, std=(0.2,) * 3,
                      augmentation=specs.IMAGENET_AUGMENTATION, in_memory=True,
                      source=specs.NPZ, prepare_command='python -m dqnn.data.prepare')


def test_no_module_of_dqnn_data_branches_on_a_dataset_name():
  names = '|'.join(re.escape(repr(n)) for n in specs.SUPPORTED_DATASETS)
  comparison = re.compile(rf'(==|!=|\bin\b)\s*\(?({names}|SAMPLE\b)|({names}|SAMPLE\b)\s*(==|!=)')
  for path in DATA_PACKAGE.glob('*.py'):
    for number, line in enumerate(path.read_text().splitlines(), 1):
      assert not comparison.search(line), f'{path.name}:{number}: {line.strip()}'
