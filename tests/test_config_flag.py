import os
import sys

import pytest

from dqnn import config_flag

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'cifar100_resnet20_w2a2.py')


def test_a_good_config_and_overrides_pass():
  config_flag.check([f'--config={CONFIG}:runlocal', '--config.optimizer.learning_rate=0.1',
                     '--config.quant.w_bits', '3', '--noconfig.weight_images', '--workdir=x'])


@pytest.mark.parametrize('override, hint', [
    ('--config.optimizer.learnin_rate=0.1', 'Did you mean --config.optimizer.learning_rate'),
    ('--config.w_bits=2', 'Did you mean --config.quant.w_bits?'),  # Misplaced, not misspelt.
    ('--noconfig.weight_imags', 'Did you mean --config.weight_images?'),
])
def test_an_unknown_override_names_the_nearest_field(override, hint):
  with pytest.raises(config_flag.ConfigFlagError, match='has no field') as error:
    config_flag.check([f'--config={CONFIG}', override])
  assert hint in str(error.value) and len(str(error.value).splitlines()) == 1


def test_a_config_path_typo_names_the_files_that_exist():
  typo = os.path.join(REPO, 'configs', 'cifar100_resnt20_w2a2.py')
  with pytest.raises(config_flag.ConfigFlagError,
                     match=f'no such file .*Did you mean {CONFIG}'):
    config_flag.check([f'--config={typo}'])


def test_configs_import_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, 'path', [p for p in sys.path if os.path.abspath(p or '.') != REPO])
  sys.modules.pop('configs', None)
  sys.modules.pop('configs.base', None)
  config_flag.check([f'--config={CONFIG}'])
  assert REPO in sys.path


def test_a_config_outside_a_configs_folder_that_imports_them_says_where_to_put_it(tmp_path,
                                                                                 monkeypatch):
  monkeypatch.setattr(sys, 'path', [p for p in sys.path if os.path.abspath(p or '.') != REPO])
  monkeypatch.delitem(sys.modules, 'configs', raising=False)
  monkeypatch.delitem(sys.modules, 'configs.base', raising=False)
  monkeypatch.chdir(tmp_path)
  mine = tmp_path / 'mine.py'
  mine.write_text('from configs import base\n\ndef get_config():\n  return base.get_base_config()\n')
  with pytest.raises(config_flag.ConfigFlagError, match="inside the repository's configs/"):
    config_flag.check([f'--config={mine}'])
