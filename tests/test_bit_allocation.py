"""The budgeted allocation solver against brute force on hand-made costs."""
import itertools
import random

import pytest

from dqnn import bit_allocation
from dqnn.bit_allocation import Choice


def _brute_force(choices, budget):
  """The least total sensitivity over every combination that fits, or None."""
  fitting = [sum(c.sensitivity for c in combo) for combo in itertools.product(*choices)
             if sum(c.cost for c in combo) <= budget]
  return min(fitting) if fitting else None


def test_hand_made_optimum():
  # Two layers; a budget of 10 fits (a6, b4) or (a2, b8), not both dear choices.
  choices = [[Choice('a2', 2, 5.0), Choice('a6', 6, 3.0)],
             [Choice('b4', 4, 3.0), Choice('b8', 8, 0.5)]]
  allocation = bit_allocation.allocate(choices, 10)
  assert allocation.indices == (0, 1)  # 5.0 + 0.5 beats 3.0 + 3.0.
  assert (allocation.cost, allocation.sensitivity) == (10, 5.5)
  assert bit_allocation.allocate(choices, 9).indices == (0, 0)  # Only a2 + b4 fits.
  assert bit_allocation.allocate(choices, 100).indices == (1, 1)


def test_ties_go_to_the_cheaper_allocation():
  choices = [[Choice('cheap', 1, 1.0), Choice('dear', 5, 1.0)]]
  assert bit_allocation.allocate(choices, 10).indices == (0,)


@pytest.mark.parametrize('seed', range(30))
def test_matches_brute_force_and_respects_the_budget(seed):
  rng = random.Random(seed)
  # Large costs, as BOPs are, with repeats (many layers share a cost).
  choices = [[Choice(j, rng.choice([1, 2, 3, 5, 8]) * 10**9 * rng.randint(1, 3),
                     rng.random()) for j in range(rng.randint(1, 5))]
             for _ in range(rng.randint(1, 6))]
  least = bit_allocation.minimum_cost(choices)
  most = sum(max(c.cost for c in layer) for layer in choices)
  budget = rng.randint(least, most)
  allocation = bit_allocation.allocate(choices, budget)
  chosen = [layer[i] for layer, i in zip(choices, allocation.indices)]
  assert allocation.cost == sum(c.cost for c in chosen) <= budget
  assert allocation.sensitivity == pytest.approx(sum(c.sensitivity for c in chosen))
  assert allocation.sensitivity == pytest.approx(_brute_force(choices, budget))


def test_infeasible_budget_names_the_least_achievable_cost():
  choices = [[Choice('a', 3, 0.0), Choice('b', 7, 0.0)], [Choice('c', 4, 0.0)]]
  with pytest.raises(bit_allocation.InfeasibleBudgetError,
                     match='budget of 6: the least achievable cost.* is 7'):
    bit_allocation.allocate(choices, 6)
  assert bit_allocation.allocate(choices, 7).indices == (0, 0)
