"""Budgeted bit allocation: one choice per layer, least total sensitivity within a cost budget.

The problem is a multiple-choice knapsack: layer `i` takes exactly one of its choices
`(cost_ij, sensitivity_ij)`; minimise `sum sensitivity` subject to `sum cost <= budget`. Costs
are integers (BOPs or bytes, too large to index a table by), so the solver is an exact dynamic
program over Pareto frontiers: after each layer it keeps, of every partial allocation of the
layers so far, only those no other beats in both cost and sensitivity (a dominated one can never
complete to a better allocation, since the remaining layers add the same to both). Partial
allocations that cannot fit even with the cheapest choices for the remaining layers are dropped
too. The frontier holds at most one entry per distinct partial cost; for the models here
(tens of layers, a few dozen choices each) it stays small.
"""
import dataclasses
import math
from typing import Any, Sequence


class InfeasibleBudgetError(ValueError):
  """No allocation fits the budget."""


@dataclasses.dataclass(frozen=True)
class Choice:
  """One option for one layer: what it is (e.g. `(w_bits, a_bits)`), its cost, its sensitivity."""
  option: Any
  cost: int
  sensitivity: float


@dataclasses.dataclass(frozen=True)
class Allocation:
  """The chosen index into each layer's choices, and the totals."""
  indices: tuple[int, ...]
  cost: int
  sensitivity: float


def minimum_cost(choices: Sequence[Sequence[Choice]]) -> int:
  return sum(min(choice.cost for choice in layer) for layer in choices)


def allocate(choices: Sequence[Sequence[Choice]], budget: int) -> Allocation:
  """The allocation of least total sensitivity with total cost <= `budget` (ties: the cheaper).

  `choices[i]` are layer i's options. Raises `InfeasibleBudgetError` (naming the least
  achievable cost) when even the cheapest choice everywhere exceeds the budget.
  """
  for i, layer in enumerate(choices):
    if not layer:
      raise ValueError(f'Layer {i} has no choices.')
    for choice in layer:
      if not math.isfinite(choice.sensitivity):
        raise ValueError(f'Layer {i}, {choice.option}: sensitivity {choice.sensitivity} is not '
                         'finite.')
  least = minimum_cost(choices)
  if least > budget:
    raise InfeasibleBudgetError(
        f'No allocation fits the budget of {budget:,}: the least achievable cost, every layer '
        f'at its cheapest choice, is {least:,}. Raise the budget or add lower bit widths.')
  # cheapest_rest[i]: the least cost of layers i, i+1, ...
  cheapest_rest = [0] * (len(choices) + 1)
  for i in reversed(range(len(choices))):
    cheapest_rest[i] = cheapest_rest[i + 1] + min(choice.cost for choice in choices[i])
  # (cost, sensitivity, path) with path a linked list (index, previous path) of choices made.
  frontier = [(0, 0.0, None)]
  for i, layer in enumerate(choices):
    room = budget - cheapest_rest[i + 1]
    extended = sorted(
        ((cost + choice.cost, value + choice.sensitivity, (j, path))
         for cost, value, path in frontier for j, choice in enumerate(layer)
         if cost + choice.cost <= room), key=lambda entry: (entry[0], entry[1]))
    frontier = []
    for entry in extended:  # By cost: keep only those with less sensitivity than all cheaper.
      if not frontier or entry[1] < frontier[-1][1]:
        frontier.append(entry)
  cost, value, path = frontier[-1]  # The least sensitivity, and of those the cheapest.
  indices = []
  while path is not None:
    index, path = path
    indices.append(index)
  return Allocation(tuple(reversed(indices)), cost, value)
