"""The distillation loss and teacher apply (`dqnn.distill`), on hand-made logits."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn import distill
from dqnn import metrics

STUDENT = jnp.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
TEACHER = jnp.array([[1.0, 2.0, 0.0], [-1.0, 0.5, 2.5]])
LABELS = jnp.array([0, 2])


def _softmax(logits):  # float64, as the reference.
  e = np.exp(np.asarray(logits, np.float64))
  return e / e.sum(axis=-1, keepdims=True)


def _kl(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


@pytest.mark.parametrize('temperature', [1.0, 4.0])
def test_soft_term_is_the_kl_at_temperature_scaled_by_its_square(temperature):
  p, q = _softmax(TEACHER / temperature), _softmax(STUDENT / temperature)
  np.testing.assert_allclose(
      distill.distillation_loss(STUDENT, TEACHER, LABELS, temperature=temperature, weight=1.0),
      temperature ** 2 * _kl(p, q), rtol=1e-4)  # float32 KL of near-equal distributions.


def test_a_student_matching_its_teacher_has_no_soft_loss():
  np.testing.assert_allclose(distill.soft_cross_entropy(TEACHER, TEACHER, 2.0), 0.0, atol=1e-6)


def test_weight_zero_is_the_label_cross_entropy_and_weight_one_ignores_labels():
  np.testing.assert_allclose(
      distill.distillation_loss(STUDENT, TEACHER, LABELS, temperature=3.0, weight=0.0,
                                label_smoothing=0.1),
      metrics.cross_entropy(STUDENT, LABELS, 0.1), rtol=1e-6)
  label_free = [distill.distillation_loss(STUDENT, TEACHER, labels, weight=1.0)
                for labels in (LABELS, 1 - LABELS)]
  np.testing.assert_array_equal(*label_free)


def test_the_mix_is_linear_in_the_weight():
  hard = metrics.cross_entropy(STUDENT, LABELS)
  soft = distill.soft_cross_entropy(STUDENT, TEACHER, 2.0)
  np.testing.assert_allclose(
      distill.distillation_loss(STUDENT, TEACHER, LABELS, temperature=2.0, weight=0.25),
      0.75 * hard + 0.25 * soft, rtol=1e-6)


def test_no_gradient_reaches_the_teacher():
  def loss(student, teacher):
    return distill.distillation_loss(student, teacher, LABELS, temperature=2.0,
                                     weight=0.5).mean()

  grad_student, grad_teacher = jax.grad(loss, argnums=(0, 1))(STUDENT, TEACHER)
  assert np.all(np.asarray(grad_teacher) == 0)
  assert np.any(np.asarray(grad_student) != 0)


def test_teacher_logits_run_in_eval_mode_without_gradient():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      x = nn.BatchNorm(use_running_average=not train)(x)
      return nn.Dense(3, dtype=jnp.bfloat16)(x)

  x = jax.random.normal(jax.random.key(0), (4, 5))
  variables = Net().init(jax.random.key(1), x, train=False)
  logits = distill.teacher_logits(Net(), variables, x, train=False)  # No mutable collection.
  assert logits.dtype == jnp.float32 and logits.shape == (4, 3)
  grads = jax.grad(lambda v: distill.teacher_logits(Net(), v, x, train=False).sum())(variables)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads))
