"""Each plot command writes non-empty figures of the requested format and size; the weight
figure shows every channel's levels or their spread; the curves show top-1 in percent."""
import os

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
import pytest

from dqnn import figures
from dqnn import plots
from dqnn import runs
from dqnn import tracing
from dqnn.quantizers import readout
from dqnn.variables import WEIGHT_QUANTIZER, layer_variables
from run_testlib import trained_run

# One worker runs the module, so its module-scoped training runs once (pytest.ini: loadgroup).
pytestmark = pytest.mark.xdist_group('plots')

_LAYERS = ('stage1.block0.conv1', 'stage1.block0.conv2', 'stage2.block0.conv1',
           'stage2.block0.conv2')


@pytest.fixture(scope='session')
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
      # Each figure's own size in inches at the default 150 dpi.
    _check_png(plots_dir / 'weights' / f'{layer}.png', (900, 675))
    _check_png(plots_dir / 'act_error' / f'{layer}.png', (900, 600))
  _check_png(plots_dir / 'curves.png', (1650, 600))
  assert len(written) == 2 * len(_LAYERS) + 1


def _write_metrics(workdir, lines):
  workdir.mkdir()
  (workdir / 'metrics.jsonl').write_text(''.join(line + '\n' for line in lines))
  return str(workdir)


def test_png_pixels_are_inches_times_dpi(run, tmp_path):
  config, variables = runs.read_workdir(str(run[0]))
  # Width alone keeps the weight figure's 6 x 4.5 in aspect: 4 x 3 in.
  path, *_ = plots.plot_weights(config, variables, str(tmp_path), plots.Output(dpi=80, width_in=4))
  _check_png(path, (320, 240))
  curves = _write_metrics(tmp_path / 'r', ['{"step": 1, "split": "train", "loss": 4.0}'])
  _check_png(plots.plot_curves([curves], str(tmp_path / 'c.png'),
                               plots.Output(dpi=100, width_in=7, height_in=2.5)), (700, 250))


@pytest.mark.parametrize('file_format, magic', [('pdf', b'%PDF'), ('svg', b'<svg')])
def test_vector_formats(run, tmp_path, file_format, magic):
  config, variables = runs.read_workdir(str(run[0]))
  written = plots.plot_weights(config, variables, str(tmp_path), plots.Output(file_format))
  assert len(written) == len(_LAYERS)
  for path in written:
    assert path.endswith(f'.{file_format}')
    with open(path, 'rb') as f:
      assert magic in f.read(2000)


def test_output_rejects_unknown_format_and_bad_size():
  with pytest.raises(ValueError, match='png, pdf, svg'):
    plots.Output('jpg')
  with pytest.raises(ValueError, match='dpi must be positive'):
    plots.Output(dpi=0)


def test_curves_show_top1_in_percent(tmp_path):
  workdir = _write_metrics(tmp_path / 'r', [
      '{"step": 1, "split": "train", "loss": 4.0, "top1": 0.1}',
      '{"step": 2, "split": "train", "loss": 3.0, "top1": 0.25}',
      '{"step": 2, "split": "eval", "loss": 3.5, "top1": 0.2}'])
  fig = plots.curves_figure([workdir])
  _, top1 = fig.axes
  assert top1.get_ylabel() == 'top-1 (%)'
  train, evaluation = top1.get_lines()
  np.testing.assert_allclose(train.get_ydata(), [10., 25.])
  np.testing.assert_allclose(evaluation.get_ydata(), [20.])
  # One figure legend: the run, then the two splits.
  assert [t.get_text() for t in fig.legends[0].get_texts()] == ['r', 'train', 'eval']
  plt.close(fig)


def _weight_figure_and_levels(run, layer):
  config, variables = runs.read_workdir(str(run[0]))
  layers = tracing.quantized_layers(runs.model_from_config(config), (32, 32, 3), variables)
  module = next(m for m, _ in layers if '.'.join(m.path) == layer)
  table, _ = readout.kernel_levels(
      module, layer_variables(variables, (*module.path, WEIGHT_QUANTIZER)))
  return figures.weight_figure(module, variables), np.sort(table, axis=1)


def test_weight_figure_marks_each_channels_levels_in_its_row(run):
  fig, table = _weight_figure_and_levels(run, 'stage2.block0.conv2')
  assert table.shape[0] <= figures.MAX_CHANNEL_ROWS
  strip = fig.axes[1]
  dots = strip.collections[0].get_offsets()
  np.testing.assert_allclose(dots[:, 0], table.reshape(-1))
  np.testing.assert_array_equal(dots[:, 1], np.repeat(np.arange(table.shape[0]), table.shape[1]))
  assert fig.axes[0].get_yscale() == 'linear'
  plt.close(fig)


def test_weight_figure_summarises_many_channels_as_level_spread(run, monkeypatch):
  monkeypatch.setattr(figures, 'MAX_CHANNEL_ROWS', 4)
  fig, table = _weight_figure_and_levels(run, 'stage2.block0.conv2')
  assert table.shape[0] > 4
  strip = fig.axes[1]
  assert strip.get_ylabel() == 'level index'
  # One min-max bar per level index.
  bars = np.asarray(strip.collections[0].get_segments())
  np.testing.assert_allclose(bars[:, 0, 0], table.min(axis=0))
  np.testing.assert_allclose(bars[:, 1, 0], table.max(axis=0))
  median, = strip.get_lines()
  np.testing.assert_allclose(median.get_xdata(), np.median(table, axis=0))
  plt.close(fig)


def test_activation_error_falls_back_to_fake_images(run):
  config, _ = runs.read_workdir(str(run[0]))
  config.data_dir = '/nonexistent'
  images, source = plots.sample_batch(config, 4)
  assert images.shape == (4, 32, 32, 3) and source.startswith('fake')
