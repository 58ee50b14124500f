"""The suite's own set-up works as pytest.ini intends."""
import pytest


@pytest.mark.xdist_group('suite_setup')
def test_xdist_keeps_a_group_on_one_worker(request):
  """Modules sharing one expensive session fixture are grouped onto one worker (pytest.ini:
  --dist loadgroup); when a pytest/pytest-xdist pairing silently stops grouping, every worker
  builds those fixtures again and the suite takes minutes longer."""
  if not request.config.getoption('loadgroup', default=False):
    pytest.skip('not on an xdist worker with --dist loadgroup (run with -n 2, as the README)')
  assert request.node.nodeid.endswith('@suite_setup'), (
      'xdist no longer groups xdist_group-marked tests with this pytest and pytest-xdist; '
      'install the versions requirements.txt names.')
