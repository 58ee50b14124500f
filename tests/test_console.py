import logging

from dqnn import console


def test_progress_line_has_step_loss_top1_throughput_and_eta():
  line = console.progress_line(200, 1000, {'loss': 2.31412, 'top1': 0.412}, 128, 0.25)
  assert line == 'Step 200/1000 (20%): loss 2.3141, top-1 41.2%, 512 img/s, ETA 3m20s'
  assert 'ETA' not in console.progress_line(1000, 1000, {'loss': 1.0}, 128, 0.25)


def test_closing_summary_says_what_happened_and_what_to_run_next():
  records = [{'step': 4, 'split': 'eval', 'top1': 0.5, 'top5': 0.875, 'loss': 1.0}]
  finished = console.closing_summary({'step': 4, 'train/loss': 1.0, 'eval/top1': 0.5,
                                      'preempted': False}, records, '/w', 75.0)
  assert finished.splitlines()[0] == ('Finished step 4: eval top-1 50.00%, top-5 87.50% at '
                                      'step 4 (1m15s).')
  assert 'python -m dqnn.export --workdir=/w --out=model.dqnn' in finished
  again = console.closing_summary({'step': 4, 'preempted': False}, records, '/w', 1.0)
  assert again.startswith('Already finished at step 4: eval top-1 50.00%')
  stopped = console.closing_summary({'step': 2, 'train/loss': 1.0, 'preempted': True}, [], '/w', 1)
  assert stopped.startswith('Stopped by a signal at step 2, checkpoint saved')


def test_library_info_logs_are_hidden_but_their_warnings_and_dqnn_logs_stay(tmp_path):
  seen = []

  class Recorder(logging.Handler):
    def emit(self, record):
      seen.append(record.getMessage())

  root, handler = logging.getLogger(), Recorder()
  root.addHandler(handler)
  level = root.level
  root.setLevel(logging.INFO)
  try:
    console.hide_library_info_logs()
    library = logging.getLogger('orbax.some_module')
    library.info('library info')
    library.warning('library warning')
    own = logging.LogRecord('absl', logging.INFO, console.__file__, 1, 'dqnn info', None, None)
    root.handle(own)
  finally:
    root.removeHandler(handler)
    root.setLevel(level)
  assert seen == ['library warning', 'dqnn info']
