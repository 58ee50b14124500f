"""dqnn input data: TFDS-backed, sharded tf.data pipelines yielding numpy batches.

See `pipeline` (iterators), `datasets` (registry, DatasetInfo, errors),
`prepare` (offline prepare tool) and `mock` (offline mock data for tests).
"""

from dqnn.data.datasets import DatasetInfo
from dqnn.data.datasets import get_dataset_info
from dqnn.data.datasets import SUPPORTED_DATASETS
from dqnn.data.errors import DatasetNotFoundError
from dqnn.data.mock import mock_dataset
from dqnn.data.pipeline import eval_iterator
from dqnn.data.pipeline import fake_iterator
from dqnn.data.pipeline import train_iterator

__all__ = [
    'DatasetInfo', 'DatasetNotFoundError', 'SUPPORTED_DATASETS',
    'eval_iterator', 'fake_iterator', 'get_dataset_info', 'mock_dataset',
    'train_iterator',
]
