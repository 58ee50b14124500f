"""dqnn input data: grain pipelines over TFDS array_record sources, no TensorFlow.

See `specs` (one `DatasetSpec` record per dataset), `pipeline` (host pipelines), `on_device` (a
small split held on the accelerators), `datasets` (DatasetInfo, errors, where splits come from),
`transforms` (augmentation and input standardisation), `prepare` (offline prepare tool) and `mock`
(offline mock data for tests).
"""

from dqnn.data.datasets import check_split
from dqnn.data.datasets import DatasetInfo
from dqnn.data.datasets import get_dataset_info
from dqnn.data.datasets import input_statistics
from dqnn.data.errors import DatasetDamagedError
from dqnn.data.errors import DatasetNotFoundError
from dqnn.data.mock import mock_dataset
from dqnn.data.on_device import DeviceTrainData
from dqnn.data.pipeline import eval_batches
from dqnn.data.pipeline import fake_batches
from dqnn.data.pipeline import train_dataset
from dqnn.data.specs import DatasetSpec
from dqnn.data.specs import FAKE
from dqnn.data.specs import SAMPLE
from dqnn.data.specs import spec
from dqnn.data.specs import SUPPORTED_DATASETS
from dqnn.data.transforms import standardize

__all__ = [
    'DatasetDamagedError', 'DatasetInfo', 'DatasetNotFoundError', 'DatasetSpec',
    'DeviceTrainData', 'FAKE', 'SAMPLE', 'SUPPORTED_DATASETS', 'check_split', 'eval_batches',
    'fake_batches', 'get_dataset_info', 'input_statistics', 'mock_dataset', 'spec', 'standardize',
    'train_dataset',
]
