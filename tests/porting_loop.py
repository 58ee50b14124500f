"""The porting guide's training loop (docs/porting.md), run on 2 virtual CPU devices.

A typical Flax loop — `flax.training.train_state.TrainState`, `apply_gradients`, a per-device
step under `jax.shard_map` with `lax.pmean` — with the guide's changes applied. Checks every DQ
invariant after each step and prints a JSON report. Run by tests/test_porting.py in a
subprocess (XLA_FLAGS=--xla_force_host_platform_device_count=2) with the variants as arguments:
`wrap_decays`, `l2_in_loss` (the loss keeps its L2 term, masked with `decay_mask`),
`l2_unmasked` (the original example's term, on every matrix: wrap_optimizer warns) and `distill`
(the loss is `dqnn.distill.distillation_loss` against a float teacher's logits); the last line
is `{variant: report}`. One process runs them all: starting JAX is most of a variant's cost.
"""
import functools
import json
import sys
import tempfile
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state
from jax.sharding import Mesh, PartitionSpec as P

from dqnn import distill
from dqnn import optim
from dqnn import quantizers
from dqnn.layers import QuantConv, check_replicated, sync_quant_stats
from dqnn.quantizers import dq_weight

WEIGHT_DECAY = 1e-4


class CNN(nn.Module):
  conv: type = QuantConv  # the user's model took `conv: ModuleDef = nn.Conv`

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(self.conv, use_bias=False, use_running_average=not train)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, axis_name='batch')
    x = conv(8, (3, 3), w_bits=8, a_bits=8, a_signed=True, name='stem')(x)  # normalised pixels
    x = nn.relu(norm()(x))
    for i in range(2):
      x = nn.relu(norm()(conv(8, (3, 3), w_bits=2, a_bits=2, name=f'conv{i}')(x)))
    return nn.Dense(10)(x.mean((1, 2)))


class FloatTeacher(nn.Module):
  """A float network trained before (here: freshly initialised), the student's teacher."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(16, (3, 3))(x)))
    return nn.Dense(10)(x.mean((1, 2)))


class TrainState(train_state.TrainState):
  batch_stats: dict
  quant_stats: dict  # the quantizers' state, beside BatchNorm's


def train_step(state, images, labels, teacher_variables, l2_in_loss, teacher):
  # The teacher in eval mode, no gradient; its variables are replicated like the state's.
  soft_targets = (None if teacher is None else
                  distill.teacher_logits(teacher, teacher_variables, images, train=False))

  def loss_fn(params):
    logits, new = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats, 'quant_stats': state.quant_stats},
        images, train=True, mutable=['batch_stats', 'quant_stats'])
    if soft_targets is None:
      per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    else:
      per_example = distill.distillation_loss(logits, soft_targets, labels, temperature=4.0,
                                              weight=0.5)
    # The mean over every device's examples (under shard_map, gradients of the replicated
    # parameters are then the global-batch gradients).
    loss = jax.lax.pmean(per_example.mean(), 'batch')
    if l2_in_loss:  # masked: only the float kernels (L2 on a DQ index or on levels breaks DQ)
      mask = (optim.decay_mask(params) if l2_in_loss == 'masked'
              else jax.tree.map(lambda p: p.ndim > 1, params))  # the original example's term
      squares = [jnp.sum(p ** 2)
                 for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m]
      loss = loss + WEIGHT_DECAY / 2 * sum(squares)
    return loss, new

  (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(
      grads=grads, batch_stats=jax.lax.pmean(new['batch_stats'], 'batch'),
      quant_stats=sync_quant_stats(new['quant_stats'], 'batch'))
  return new_state, loss


def check_invariants(before, after):
  """DQ's invariants, and that training moved what it should."""
  quantizers.validate_params(after.params)  # levels strictly increasing, index in [-1/2, L-1/2]
  for name in ('conv0', 'conv1'):
    quantizer = after.params[name]['weight_quantizer']
    w_q = dq_weight.quantized_weight(quantizer).reshape(-1, quantizer['levels'].shape[0])
    assert bool(jnp.all(jnp.any(w_q[:, :, None] == quantizer['levels'][None], axis=-1))), name
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before.quant_stats, after.quant_stats)
  assert all(jax.tree.leaves(moved)), 'quant_stats did not move: the quantizers are frozen'
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(after))


def main(l2_in_loss, with_teacher):
  assert jax.device_count() == 2, jax.devices()
  mesh = Mesh(np.array(jax.devices()), ('batch',))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(8, 8, 8, 3)), jnp.float32)  # normalised: half negative
  labels = jnp.asarray(rng.integers(0, 10, 8))
  model = CNN()
  variables = model.init(jax.random.key(0), images, train=True)
  tx = optim.wrap_optimizer(
      optax.sgd(optax.cosine_decay_schedule(0.1, 10), momentum=0.9, nesterov=True),
      weight_decay=WEIGHT_DECAY, decay_float_kernels=not l2_in_loss)
  state = TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                            batch_stats=variables['batch_stats'],
                            quant_stats=variables['quant_stats'])
  teacher = FloatTeacher() if with_teacher else None
  teacher_variables = (teacher.init(jax.random.key(1), images, train=False)
                       if with_teacher else None)
  step = jax.jit(jax.shard_map(
      functools.partial(train_step, l2_in_loss=l2_in_loss, teacher=teacher), mesh=mesh,
      in_specs=(P(), P('batch'), P('batch'), P()), out_specs=(P(), P())))
  losses = []
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    for _ in range(3):
      new_state, loss = step(state, images, labels, teacher_variables)
      check_invariants(state, new_state)
      state, losses = new_state, losses + [float(loss)]
    jax.effects_barrier()
  check_replicated(state.quant_stats)  # every device holds the same statistics

  with tempfile.TemporaryDirectory() as directory:  # quant_stats is saved with the rest
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(f'{directory}/state', state)
      restored = checkpointer.restore(f'{directory}/state', target=state)
  quantizers.validate_params(restored.params)
  same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state, restored)
  evaluated = model.apply({'params': restored.params, 'batch_stats': restored.batch_stats,
                           'quant_stats': restored.quant_stats}, images, train=False)
  return {'losses': losses, 'restored_equal': all(jax.tree.leaves(same)),
          'warnings': [str(w.message) for w in caught],
          'eval_finite': bool(jnp.all(jnp.isfinite(evaluated)))}


if __name__ == '__main__':
  print(json.dumps({
      variant: main(l2_in_loss={'l2_in_loss': 'masked', 'l2_unmasked': 'unmasked'}.get(variant),
                    with_teacher=variant == 'distill')
      for variant in sys.argv[1:]}))
