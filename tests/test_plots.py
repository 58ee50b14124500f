"""Each plot command writes non-empty PNGs of the expected size."""
import os
import pathlib
import sys

from PIL import Image
import pytest

from dqnn import plots
from dqnn import runs

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / 'export'))
from run_testlib import trained_run  # pylint: disable=g-import-not-at-top,wrong-import-position

_LAYERS = ('stage1.block0.conv1', 'stage1.block0.conv2', 'stage2.block0.conv1',
           'stage2.block0.conv2')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  return trained_run(tmp_path_factory)


def _check_png(path, size):
  assert os.path.getsize(path) > 1000
  with Image.open(path) as image:
    assert image.format == 'PNG' and image.size == size
    # Not a blank canvas: the plot drew something.
    assert len(image.convert('L').getcolors(maxcolors=1 << 16)) > 10


def test_plot_run_writes_weight_activation_and_curve_plots(run, tmp_path):
  workdir, data_dir = run
  del data_dir  # The run's config names it: the error plots use its eval split.
  other = tmp_path / 'other'
  other.mkdir()
  (other / 'metrics.jsonl').write_text(
      '{"step": 1, "split": "train", "loss": 4.0, "top1": 0.1}\n'
      '{"step": 2, "split": "train", "loss": 3.0, "top1": 0.2}\n')
  # What `python -m dqnn.plots --workdir=W --compare=O --batch_size=16` runs.
  written = plots.plot_run(str(workdir), [str(other)], batch_size=16)
  plots_dir = workdir / plots.PLOTS_DIR
  for layer in _LAYERS:
    _check_png(plots_dir / 'weights' / f'{layer}.png', (600, 400))
    _check_png(plots_dir / 'act_error' / f'{layer}.png', (600, 400))
  _check_png(plots_dir / 'curves.png', (1100, 400))
  assert len(written) == 2 * len(_LAYERS) + 1


def test_activation_error_falls_back_to_fake_images(run):
  config, _ = runs.read_workdir(str(run[0]))
  config.data_dir = '/nonexistent'
  images, source = plots.sample_batch(config, 4)
  assert images.shape == (4, 32, 32, 3) and source.startswith('fake')
