"""Restoring quantizers' invariants after parameters were moved by something other than their
own update (a plain Optax optimizer, L2 decay on every parameter, a hand edit)."""
from typing import Any

from dqnn.optim.tree import map_quantizers


def project_dq_params(params: Any) -> Any:
  """`params` with every weight quantizer's invariants restored (its `project` capability);
  other leaves unchanged.

  DQ: levels are sorted and pushed apart to the minimum gap (symmetric tables stay symmetric
  and their half levels positive); each index is clipped to `[-1/2, L-1/2]` (NaN to 0). Where a
  level row had to change, each weight keeps the quantized value it had, now as an index on
  the repaired row. Use it once on parameters a foreign optimizer has moved, then train with
  `wrap_optimizer`/`create_optimizer`, which keep the invariants by construction.
  """
  return map_quantizers('project', lambda project, _, p: project(p), params, params)
