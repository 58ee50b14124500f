"""The training loop's TensorBoard weight images, drawn from its own model and variables."""
import os
import pathlib
import subprocess
import sys

from dqnn import runs
from dqnn import summaries
from run_testlib import trained_run

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_training_imports_neither_plots_report_export_nor_matplotlib():
  script = ('import sys, dqnn.train; '
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
            "(['dqnn', 'plots'], ['dqnn', 'report'], ['dqnn', 'export']) "
            "or m.split('.')[0] == 'matplotlib'))")
  r = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True,
                     env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, timeout=300, check=True)
  assert r.stdout.strip() == '[]'


def test_weight_images_are_rgb_arrays(tmp_path_factory):
  workdir, _ = trained_run(tmp_path_factory)
  config, variables = runs.read_workdir(str(workdir))

  class _Writer:
    images = {}

    def write_images(self, step, images):
      self.images.update({(step, k): v for k, v in images.items()})

  writer = _Writer()
  summaries.write_weight_images(writer, 7, runs.model_from_config(config), variables,
                                (32, 32, 3))
  assert {k for _, k in writer.images} == {
      f'weights/stage{s}/block0/conv{c}' for s in (1, 2) for c in (1, 2)}
  assert all(v.shape == (1, 450, 600, 3) and v.dtype == 'uint8' for v in writer.images.values())
