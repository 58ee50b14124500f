"""BatchNorm re-estimation: exact batch statistics of the evaluation-mode network."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn import bn_reestimation
from dqnn import tracing
from dqnn.models import QuantPolicy, create_model
from dqnn.variables import BATCH_STATS


def _model_and_variables(policy):
  model = create_model('_cifar_resnet_tiny', num_classes=10, policy=policy)
  images = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
  variables = model.init(jax.random.key(1), images, train=True)
  return model, variables


def _batches(count):
  return [jax.random.normal(jax.random.key(10 + i), (8, 32, 32, 3)) * (1 + i)
          for i in range(count)]


def test_float_model_statistics_match_training_mode_batch_statistics():
  model, variables = _model_and_variables(QuantPolicy())
  images, = _batches(1)
  # In training mode a BatchNorm starting from zero statistics stores (1 - momentum) times its
  # batch statistics: recover them.
  zeros = jax.tree.map(jnp.zeros_like, variables[BATCH_STATS])
  _, updated = model.apply({**variables, BATCH_STATS: zeros}, images, train=True,
                           mutable=[BATCH_STATS])
  expected = jax.tree.map(lambda x: x / (1 - 0.9), updated[BATCH_STATS])
  reestimated = bn_reestimation.reestimate(model, variables, [images])[BATCH_STATS]
  assert jax.tree.structure(reestimated) == jax.tree.structure(expected)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               reestimated, expected)


def test_statistics_are_the_mean_over_batches():
  model, variables = _model_and_variables(QuantPolicy(w_bits=2, a_bits=2))
  first, second = _batches(2)
  both = bn_reestimation.reestimate(model, variables, [first, second])[BATCH_STATS]
  each = [bn_reestimation.reestimate(model, variables, [b])[BATCH_STATS]
          for b in (first, second)]
  jax.tree.map(lambda m, a, b: np.testing.assert_allclose(m, (a + b) / 2, rtol=1e-5,
                                                          atol=1e-6), both, *each)
  # The running statistics the model had are replaced, not blended.
  assert not np.allclose(both['stem_bn']['mean'], variables[BATCH_STATS]['stem_bn']['mean'])


def test_quantized_network_evaluates_as_it_was_measured():
  # Re-estimated on one batch, evaluation on that batch normalises every BatchNorm input exactly
  # as the measuring pass did: quantizers ran in evaluation mode in both.
  model, variables = _model_and_variables(QuantPolicy(w_bits=2, a_bits=2))
  images, = _batches(1)
  reestimated = bn_reestimation.reestimate(model, variables, [images])
  seen = {}

  def inputs(module, x, run):
    seen[tuple(module.path)] = x
    return run()

  with tracing.intercept_layers((nn.BatchNorm,), inputs):
    model.apply(reestimated, images, train=False)
  for path, x in seen.items():
    stats = reestimated[BATCH_STATS]
    for key in path:
      stats = stats[key]
    np.testing.assert_allclose(x.mean((0, 1, 2)), stats['mean'], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(x.var((0, 1, 2)), stats['var'], rtol=1e-3, atol=1e-4)
  assert len(seen) == len(list(bn_reestimation._paths(reestimated[BATCH_STATS])))


def test_no_batches_is_an_error():
  model, variables = _model_and_variables(QuantPolicy())
  with pytest.raises(ValueError, match='at least one batch'):
    bn_reestimation.reestimate(model, variables, [])
