"""QuantConv in an NNX model (through `nnx.bridge.ToNNX`, as docs/porting.md shows), trained by
`nnx.Optimizer` with `dqnn.optim.wrap_optimizer`; DQ invariants checked after each step."""
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import optax
import pytest
from flax.nnx import bridge

from dqnn import optim
from dqnn import quantizers
from dqnn.layers import QuantConv, QuantStateError
from dqnn.quantizers import dq_weight


class Net(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.stem = nnx.Conv(3, 8, (3, 3), rngs=rngs)
    self.norm = nnx.BatchNorm(8, rngs=rngs)
    self.conv = bridge.ToNNX(QuantConv(8, (3, 3), w_bits=2, a_bits=2), rngs=rngs)
    self.head = nnx.Linear(8, 10, rngs=rngs)
    self.use_running_average = False  # set by model.train() / model.eval(), as BatchNorm's

  def __call__(self, x):
    x = nnx.relu(self.norm(self.stem(x)))
    # Training refits the quantizer's statistics (quant_stats); evaluation keeps them.
    x = nnx.relu(self.conv(x, mutable=False if self.use_running_average else ['quant_stats']))
    return self.head(x.mean((1, 2)))


def test_nnx_model_with_quantized_layers_trains_and_keeps_dq_invariants():
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  labels = jnp.arange(4) % 10
  model = Net(nnx.Rngs(0))
  bridge.lazy_init(model.conv, jnp.zeros((4, 8, 8, 8)))
  optimizer = nnx.Optimizer(model, optim.wrap_optimizer(
      optax.adamw(0.01, mask=optim.decay_mask), weight_decay=1e-4, decay_float_kernels=False),
      wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  # The layer's quant_stats: neither its parameters nor its random-stream counters.
  stats = lambda: jax.tree.leaves(nnx.as_pure(nnx.state(
      model.conv, nnx.Not(nnx.Any(nnx.Param, nnx.RngState)))))
  model.train()
  assert len(stats()) == 1  # the activation quantizer's closed-form basis
  losses = []
  for _ in range(4):
    before = [jnp.array(a) for a in stats()]
    losses.append(float(train_step(model, optimizer)))
    quantizers.validate_params(nnx.as_pure(nnx.state(model, nnx.Param)))
    assert any(not bool(jnp.array_equal(a, b)) for a, b in zip(before, stats()))
  assert losses[-1] < losses[0]
  model.eval()
  assert model.use_running_average
  before = [jnp.array(a) for a in stats()]
  model(x)
  assert all(bool(jnp.array_equal(a, b)) for a, b in zip(before, stats()))


class _NetWithoutMutable(Net):
  def __call__(self, x):  # forgets mutable=['quant_stats'] while training
    return self.head(nnx.relu(self.conv(nnx.relu(self.norm(self.stem(x))))).mean((1, 2)))


def test_nnx_training_without_mutable_quant_stats_is_an_error_not_a_freeze():
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  model = _NetWithoutMutable(nnx.Rngs(0))
  bridge.lazy_init(model.conv, jnp.zeros((4, 8, 8, 8)))
  model.train()
  with pytest.raises(QuantStateError, match=r"ToNNX: call the layer with mutable=\['quant_stats'\]"):
    nnx.jit(nnx.grad(lambda m: m(x).sum()))(model)
  model.eval()
  model(x)  # evaluation with nothing mutable keeps the statistics, as it should
  nnx.grad(lambda m, x: m(x).sum(), argnums=1)(model, x)  # of the input only: evaluation
