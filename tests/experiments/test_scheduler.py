"""The studies' scheduler: needs, slots, exclusive rows, failures and the time budget."""
import signal
import time

from experiments import scheduler


class _Process:
  """A stand-in for a row's subprocess: exits with `code` after `polls` polls."""

  def __init__(self, polls, code):
    self.polls, self.code, self.returncode, self.signals = polls, code, None, []

  def poll(self):
    self.polls -= 1
    if self.polls <= 0 and self.returncode is None:
      self.returncode = self.code
    return self.returncode

  def send_signal(self, sig):
    self.signals.append(sig)

  def wait(self):
    self.returncode = -signal.SIGTERM


class _Study:
  """Rows that take `polls[name]` polls and exit with `codes[name]` (0 records the row)."""

  def __init__(self, polls, codes=None):
    self.polls, self.codes = polls, codes or {}
    self.done, self.events, self.processes = set(), [], {}

  def start(self, job, slot):
    self.events.append(('start', job.name, None if slot is None else tuple(sorted(slot))))
    code = self.codes.get(job.name, 0)
    if code == 0:  # What a row's own process does when it finishes: records itself.
      self.done.add(job.name)
    process = _Process(self.polls[job.name], code)
    self.processes[job.name] = process
    return process

  def run(self, jobs, slots, deadline=float('inf')):
    return scheduler.run(jobs, slots=slots, is_done=self._is_done, start=self.start,
                         on_done=lambda job: self.events.append(('done', job.name)),
                         log_path=lambda job: f'{job.name}.log', deadline=deadline, poll_s=0)

  def _is_done(self, name):
    process = self.processes.get(name)
    return name in self.done and (process is None or process.returncode == 0)


def test_a_row_starts_after_its_needs_and_rows_share_the_slots():
  study = _Study({'fp': 2, 'a': 3, 'b': 1, 'other': 1})
  jobs = [scheduler.Job('fp'), scheduler.Job('a', ('fp',)), scheduler.Job('b', ('fp',)),
          scheduler.Job('other')]
  assert study.run(jobs, slots=[{0}, {1}]) == []
  starts = [event for event in study.events if event[0] == 'start']
  assert starts[:2] == [('start', 'fp', (0,)), ('start', 'other', (1,))]
  names = [event[:2] for event in study.events]
  assert names.index(('done', 'fp')) < min(names.index(('start', 'a')),
                                           names.index(('start', 'b')))
  assert {event[1] for event in starts} == {'fp', 'a', 'b', 'other'}


def test_a_failed_row_leaves_the_rows_that_need_it_and_the_others_go_on(capsys):
  study = _Study({'fp': 1, 'a': 1, 'other': 2}, codes={'fp': 1})
  jobs = [scheduler.Job('fp'), scheduler.Job('a', ('fp',)), scheduler.Job('other')]
  left = study.run(jobs, slots=[None])
  assert [job.name for job in left] == ['fp', 'a']
  assert ('done', 'other') in study.events
  output = capsys.readouterr().out
  assert 'FAILED fp (exit 1); see fp.log' in output and "not started" in output


def test_an_exclusive_row_waits_for_the_running_ones_and_holds_the_rest():
  study = _Study({'ft': 3, 'scratch': 2, 'late': 1, 'fp': 1})
  jobs = [scheduler.Job('fp'), scheduler.Job('ft', ('fp',)), scheduler.Job('scratch',
                                                                           exclusive=True),
          scheduler.Job('late')]
  assert study.run(jobs, slots=[{0}, {1}]) == []
  order = [event[1] for event in study.events if event[0] == 'start']
  assert order.index('scratch') < order.index('late')
  scratch = order.index('scratch')
  assert ('start', 'scratch', None) in study.events
  # Nothing runs beside it: every earlier start is done before it starts, 'late' after it ends.
  events = study.events
  assert all(events.index(('done', name)) < events.index(('start', 'scratch', None))
             for name in order[:scratch])
  assert events.index(('done', 'scratch')) < [e[:2] for e in events].index(('start', 'late'))


def test_past_the_deadline_running_rows_are_stopped_and_left(capsys):
  study = _Study({'a': 10 ** 6, 'b': 1})
  left = study.run([scheduler.Job('a'), scheduler.Job('b', ('a',))], slots=[None],
                   deadline=time.monotonic() + 0.05)
  assert [job.name for job in left] == ['b', 'a']
  assert study.processes['a'].signals == [signal.SIGTERM]
  assert 'stopped a (time budget)' in capsys.readouterr().out


def test_core_slots_split_this_process_cores():
  assert scheduler.core_slots(3, pin=False) == [None, None, None]
  slots = scheduler.core_slots(1, pin=True)
  assert len(slots) == 1 and slots[0]
