"""The README's promises: the layers example runs and trains; CI runs the README's test command."""
import pathlib
import re

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def _block_after(marker: str) -> str:
  match = re.search(re.escape(marker) + r'\s*```\w*\n(.*?)```', README, re.DOTALL)
  assert match, f'README has no code block after {marker}'
  return match.group(1)


def test_layers_example_runs_and_trains():
  namespace = {}
  exec(compile(_block_after('<!-- layers-example -->'), 'README.md', 'exec'), namespace)
  first_loss = float(namespace['loss'])
  assert np.isfinite(first_loss)
  assert set(namespace['params']['QuantConv_0']['weight_quantizer']) == {'levels', 'index'}
  params, state, opt_state = namespace['params'], namespace['state'], namespace['opt_state']
  for _ in range(30):
    params, state, opt_state, loss = namespace['train_step'](params, state, opt_state)
  assert float(loss) < first_loss
  levels = np.asarray(params['QuantConv_0']['weight_quantizer']['levels'])
  assert np.all(np.diff(levels, axis=-1) > 0)


def test_ci_runs_the_readme_test_command():
  test_command = _block_after('<!-- setup-commands -->').strip().splitlines()[-1]
  ci_commands = [line.strip() for line in (ROOT / '.ci' / 'run').read_text().splitlines()]
  assert test_command in ci_commands, (test_command, ci_commands)
