"""Learning-rate schedules: cosine or step decay, with an optional linear warm-up."""
import optax

SCHEDULES = ('cosine', 'step', 'constant')


def create_learning_rate_schedule(*, schedule: str, peak_learning_rate: float,
                                  total_steps: int, warmup_steps: int = 0,
                                  decay_boundaries: tuple[int, ...] = (),
                                  decay_factor: float = 0.1) -> optax.Schedule:
  """The weights' learning rate as a function of the step.

  Args:
    schedule: 'cosine' (to zero at `total_steps`), 'step' (times `decay_factor` at each of
      `decay_boundaries`, in steps) or 'constant'.
    peak_learning_rate: the rate reached at the end of the warm-up.
    total_steps: length of the run.
    warmup_steps: linear warm-up from 0 (0 = none).
    decay_boundaries, decay_factor: of the step schedule.
  """
  if schedule not in SCHEDULES:
    raise ValueError(f'schedule must be one of {SCHEDULES}; got {schedule!r}.')
  if not 0 <= warmup_steps < max(total_steps, 1):
    raise ValueError(f'warmup_steps={warmup_steps} must be in [0, total_steps={total_steps}).')
  if schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak_learning_rate, total_steps - warmup_steps)
  elif schedule == 'step':
    # Boundaries count from the start of the run, the decayed part starts after the warm-up.
    main = optax.piecewise_constant_schedule(
        peak_learning_rate,
        {b - warmup_steps: decay_factor for b in decay_boundaries if b > warmup_steps})
  else:
    main = optax.constant_schedule(peak_learning_rate)
  if not warmup_steps:
    return main
  warmup = optax.linear_schedule(0.0, peak_learning_rate, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])
