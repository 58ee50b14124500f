"""Training and evaluation: `train_and_evaluate(config, workdir)`.

Data parallel over every device: one `Mesh` with a 'data' axis, the batch sharded along it and
the train state replicated. Under `jax.jit` the model sees the global batch, so BatchNorm and
quantizer statistics are global-batch statistics whatever the device count.
"""
import functools
import os
import signal
import time
from typing import Any, Iterator

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dqnn import bn_reestimation
from dqnn import checkpoint
from dqnn import console
from dqnn import data
from dqnn import distill
from dqnn import distributed
from dqnn import metrics
from dqnn import run_builder
from dqnn import run_config
from dqnn import summaries
from dqnn import warm_start
from dqnn.data.train_input import global_batch
from dqnn.variables import BATCH_STATS, PARAMS, QUANT_METRICS, QUANT_STATS

# The model state a training step updates besides the parameters.
MODEL_STATE = (BATCH_STATS, QUANT_STATS)
# metrics.jsonl split of the final evaluation before BatchNorm re-estimation (when configured).
BEFORE_BN_REESTIMATION = 'eval_before_bn_reestimation'


class NonFiniteError(FloatingPointError):
  """Training produced a NaN or Inf loss or parameter."""


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds: the step, parameters, optimizer and model state."""
  step: jax.Array
  params: Any
  opt_state: Any
  batch_stats: Any
  quant_stats: Any

  def variables(self) -> dict[str, Any]:
    return {PARAMS: self.params, BATCH_STATS: self.batch_stats, QUANT_STATS: self.quant_stats}


class _Preemption:
  """Whether to save and stop after this step: SIGTERM (preemption) or Ctrl-C was received.

  One process: SIGTERM and SIGINT set a flag; a second SIGINT ends the process at once (os._exit:
  no Python unwinding inside XLA; checkpoints are committed atomically, so the last committed one
  survives and a half-written one is discarded when the run resumes). Several processes: JAX's
  preemption service (started by `jax.distributed.initialize`) catches SIGTERM and names a step
  at which every process stops together, so they all join the final save.
  """
  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, manager):
    self._manager = manager
    self._multi_process = jax.process_count() > 1
    self._received = False
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self._received and signum == signal.SIGINT:
      os.write(2, b'\nInterrupted again: exiting now, without saving; the last committed '
                  b'checkpoint is kept.\n')
      os._exit(128 + signum)  # pylint: disable=protected-access
    if not self._received:
      os.write(2, f'\n{signal.Signals(signum).name}: saving a checkpoint after this step, then '
                  'stopping (Ctrl-C again exits at once).\n'.encode())
    self._received = True

  def __enter__(self):
    if not self._multi_process:
      self._previous = {s: signal.signal(s, self._handle) for s in self._SIGNALS}
    return self

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)

  def reached(self, step: int) -> bool:
    return self._manager.reached_preemption(step) if self._multi_process else self._received


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(state: TrainState, inputs: dict[str, Any], teacher_variables: Any = None, *,
               model, tx, make_batch, input_statistics: str, label_smoothing: float,
               teacher_model: Any = None,
               temperature: float = 1.0, distill_weight: float = 1.0):
  """One optimizer step on the batch `make_batch(inputs)`; returns (state, metrics, finite).

  With a `teacher_model` (its variables passed as `teacher_variables`, so that they are arguments
  of the compiled step rather than constants in it) the loss is `distill.distillation_loss`.
  """
  batch = make_batch(inputs)
  images = data.standardize(batch['image'], input_statistics)
  soft_targets = (None if teacher_model is None else
                  distill.teacher_logits(teacher_model, teacher_variables, images, train=False))

  def loss_fn(params):
    logits, model_state = model.apply(
        {**state.variables(), 'params': params}, images, train=True,
        mutable=list(MODEL_STATE))
    if soft_targets is None:
      loss = metrics.cross_entropy(logits, batch['label'], label_smoothing)
    else:
      loss = distill.distillation_loss(logits, soft_targets, batch['label'],
                                       temperature=temperature, weight=distill_weight,
                                       label_smoothing=label_smoothing)
    return loss.mean(), (logits, model_state)

  (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      **{name: model_state.get(name, {}) for name in MODEL_STATE})
  step_metrics = {'loss': loss, 'top1': metrics.correct_top_k(logits, batch['label'], 1).mean()}
  if soft_targets is not None:
    step_metrics['distill_loss'] = distill.soft_cross_entropy(logits, soft_targets,
                                                              temperature).mean()
    step_metrics['teacher_top1'] = metrics.correct_top_k(soft_targets, batch['label'], 1).mean()
  return new_state, step_metrics, jnp.isfinite(loss) & _all_finite(params)


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, model,
              input_statistics: str) -> dict[str, jax.Array]:
  """Sums over the batch's real (mask True) examples."""
  logits, sown = model.apply(state.variables(), data.standardize(batch['image'], input_statistics),
                             train=False,
                             mutable=[QUANT_METRICS])
  mask = batch['mask'].astype(jnp.float32)
  count = mask.sum()
  sums = {'loss': (metrics.cross_entropy(logits, batch['label']) * mask).sum(),
          'top1': (metrics.correct_top_k(logits, batch['label'], 1) * mask).sum(),
          'top5': (metrics.correct_top_k(logits, batch['label'], 5) * mask).sum(),
          'count': count}
  # A layer's error is a mean over the batch; weight it by the batch's real examples.
  sums.update({name: error * count for name, error in
               metrics.layer_errors(sown.get(QUANT_METRICS, {})).items()})
  return sums


def evaluate(batches: Iterator[dict[str, np.ndarray]], state: TrainState, eval_fn,
             batch_sharding: NamedSharding) -> dict[str, float]:
  """Loss, top-1, top-5 and per-layer activation error over `batches`, the whole eval split."""
  totals = None
  for batch in batches:
    sums = eval_fn(state, global_batch(batch, batch_sharding))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = totals.pop('count')
  return {name: value / count for name, value in totals.items()}


def initial_state(model, tx, rng: jax.Array, images: jax.Array) -> TrainState:
  """A fresh train state; activation quantizer ranges are fitted to `images`.

  The model runs as in training: with BatchNorm on batch statistics the ranges see normalised
  activations, where BatchNorm's initial running statistics (the identity) would let them grow
  layer by layer.
  """
  variables = model.init(rng, images, train=True)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    **{name: variables.get(name, {}) for name in MODEL_STATE})


def _replicate(tree: Any, sharding: NamedSharding) -> Any:
  """Host values, identical on every process, as global arrays laid out by `sharding`."""
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda i: np.asarray(x)[i]),
      jax.device_get(tree))


def _check_finite(pending: list[tuple[int, jax.Array]]) -> None:
  """Raises `NonFiniteError` naming the first step whose loss or parameters are not finite."""
  for step, finite in zip([s for s, _ in pending], jax.device_get([f for _, f in pending])):
    if not finite:
      raise NonFiniteError(
          f'Loss or parameters became NaN/Inf at step {step}; training stopped. The last '
          'checkpoint before it is kept (lower the learning rate before resuming).')
  pending.clear()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns final metrics.

  Writes `workdir/config.json`, `workdir/metrics.jsonl` (one JSON object per record, with
  'step' and 'split'), TensorBoard events and `workdir/checkpoints/<step>`. Returns
  `{'<split>/<name>': value}` from this call's last train and eval records, plus 'step' and
  'preempted' (True when SIGTERM stopped it after saving, short of the run's total).
  """
  # Fails here, before anything is written, if the config is unusable or the dataset missing.
  run_config.validate(config)
  mesh = Mesh(np.array(jax.devices()), ('data',))
  return _train(run_builder.build(config, mesh), mesh, config, workdir)


def _train(run: run_builder.Run, mesh: Mesh, config: ml_collections.ConfigDict,
           workdir: str) -> dict[str, Any]:
  """The training loop over `run`'s objects. `config` is only recorded and compared on resume
  (`run_config`, `checkpoint`): every setting the loop uses is in `run`."""
  info, model, tx, train_input, teacher = run.info, run.model, run.tx, run.train_input, run.teacher
  input_statistics, settings = run.input_statistics, run.loop
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P('data'))
  rng = jax.random.key(run.seed)
  teacher_variables = None if teacher is None else _replicate(teacher.variables, replicated)
  step_fn = jax.jit(
      functools.partial(train_step, model=model, tx=tx, make_batch=train_input.make_batch,
                        input_statistics=input_statistics, label_smoothing=run.label_smoothing,
                        teacher_model=None if teacher is None else teacher.model,
                        temperature=run.distill_temperature,
                        distill_weight=run.distill_weight),
      out_shardings=replicated, donate_argnums=0)

  global_images = jax.ShapeDtypeStruct(
      (run.global_batch_size, info.image_size, info.image_size, 3), jnp.float32)
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(functools.partial(initial_state, model, tx), rng, global_images))

  distributed.check_shared_workdir(workdir)
  manager = checkpoint.create_manager(workdir, max_to_keep=settings.keep_checkpoints)
  is_main = jax.process_index() == 0
  train_metrics = {}
  if manager.latest_step() is not None:
    state, start_step, train_metrics = checkpoint.restore(
        manager, abstract_state, config, on_corrupt=settings.on_corrupt_checkpoint,
        trust_without_digest=settings.trust_checkpoints_without_digest)
    run_config.check_resume(config, run_config.read(workdir) or checkpoint.saved_config(
        manager, start_step), workdir=workdir, step=start_step)
    if start_step > run.total_steps:
      raise run_config.ConfigError(
          f'{workdir} is at step {start_step}, past this run\'s {run.total_steps} steps: a run '
          f'does not train backwards. Use --config.num_train_steps >= {start_step} to go on, a new '
          '--workdir for a shorter run, or dqnn.export / dqnn.report to use its checkpoint.')
    input_state = checkpoint.restore_input_state(manager, start_step)
    if input_state is None:
      logging.warning('The checkpoint of step %d has no input position (saved by an older '
                      'dqnn): the input starts again at its first batch.', start_step)
    else:
      train_input.set_state(input_state)
    logging.info('Resumed from step %d.', start_step)
  else:
    start_step = 0
    # Initialised outside jit: compiling the quantizers' k-means initialisation takes far longer
    # than running it once. Every process initialises from the whole first global batch (the
    # one step 1 trains on), so all hold the same values, those of a single-process run.
    position = train_input.get_state()
    first = jax.jit(train_input.make_batch)(train_input.next())
    train_input.set_state(position)
    images = np.asarray(data.standardize(distributed.gather_global_batch(first['image']),
                                       input_statistics))
    state = initial_state(model, tx, rng, images)
    if init_from := run.init_from:
      variables = warm_start.from_float(model, jax.device_get(state.variables()),
                                        checkpoint.restore_variables(init_from), images, rng)
      state = state.replace(params=variables['params'],
                            opt_state=tx.init(variables['params']),
                            **{name: variables[name] for name in MODEL_STATE})
      logging.info('Initialised from the float run in %s.', init_from)
    state = _replicate(state, replicated)
  if teacher is not None:
    distill.check_and_record(teacher, workdir, resuming=start_step > 0,
                             allow_change=settings.allow_config_change, write=is_main)
  if is_main:
    run_config.write(config, workdir, step=start_step)

  log = metrics.MetricLog(workdir, is_main_process=is_main)
  log.truncate_after(start_step)
  eval_fn = jax.jit(functools.partial(eval_step, model=model, input_statistics=input_statistics),
                    in_shardings=(replicated, batch_sharding), out_shardings=replicated)
  bn_images = jax.jit(lambda inputs: data.standardize(train_input.make_batch(inputs)['image'],
                                                    input_statistics))
  bn_statistics_fn = jax.jit(functools.partial(bn_reestimation.batch_statistics, model),
                             out_shardings=replicated)

  final = {}

  def eval_due(step: int) -> bool:
    return bool(info.num_eval) and (step == run.total_steps or (
        settings.eval_every_steps > 0 and step % settings.eval_every_steps == 0))

  def run_eval(step: int, state: TrainState) -> None:
    record = evaluate(run.eval_batches(), state, eval_fn, batch_sharding)
    log.write(step, 'eval', record)
    if settings.weight_images and is_main:
      summaries.write_weight_images(log.writer, step, model, state.variables(),
                                    (info.image_size, info.image_size, 3))
    final.update({f'eval/{k}': v for k, v in record.items()})

  pending_finite = []
  train_sums, train_count = metrics.resumed_sums(train_metrics)
  step = last_step = start_step
  preempted = False
  last_time = time.monotonic()
  try:
    # A step's checkpoint is saved before its eval, so an eval that did not finish is redone.
    if start_step and eval_due(start_step) and distributed.process_zero_flag(
        not log.has_record(start_step, 'eval')):
      logging.info('Step %d has no eval record (its eval did not finish); evaluating now.',
                   start_step)
      run_eval(start_step, state)
    with _Preemption(manager) as preemption:
      while step < run.total_steps:
        state, step_metrics, finite = step_fn(state, train_input.next(), teacher_variables)
        step += 1
        pending_finite.append((step, finite))
        train_sums = step_metrics if train_sums is None else jax.tree.map(
            jnp.add, train_sums, step_metrics)
        train_count += 1
        is_last = step == run.total_steps
        if step % settings.log_every_steps == 0 or is_last:
          _check_finite(pending_finite)
          now = time.monotonic()
          lr = float(run.schedule(step - 1))
          record = {name: float(v) / train_count
                    for name, v in jax.device_get(train_sums).items()}
          record.update({'learning_rate': lr,
                         'steps_per_sec': (step - last_step) / (now - last_time),
                         **{name: lr * scale for name, scale in run.learning_rate_scales.items()}})
          log.write(step, 'train', record)
          logging.info(console.progress_line(step, run.total_steps, record, run.global_batch_size,
                                             1 / record['steps_per_sec']))
          final.update({f'train/{k}': v for k, v in record.items()})
          train_sums, train_count, last_time, last_step = None, 0, now, step
        if is_last and run.bn_reestimation_batches:
          if info.num_eval:  # The same network before re-estimation, for comparison.
            log.write(step, BEFORE_BN_REESTIMATION, evaluate(
                run.eval_batches(), state, eval_fn, batch_sharding))
          state = state.replace(batch_stats=bn_reestimation.reestimate(
              model, state.variables(), (bn_images(train_input.next())
                                          for _ in range(run.bn_reestimation_batches)),
              bn_statistics_fn)[BATCH_STATS])
        preempted = preemption.reached(step)
        if is_last or preempted or (settings.checkpoint_every_steps
                                    and step % settings.checkpoint_every_steps == 0):
          # Never save a non-finite state: the last good checkpoint must survive.
          _check_finite(pending_finite)
          checkpoint.save(manager, step, state, config,
                          train_metrics=metrics.pending_sums(train_sums, train_count),
                          input_state=train_input.get_state())
        if eval_due(step) and not preempted:  # A preempted run's resume evaluates.
          run_eval(step, state)
        if preempted:
          logging.warning(distributed.preemption_message(step))
          break
  finally:
    checkpoint.finish(manager)
    log.close()
  final.update(step=step, preempted=preempted)
  return final
