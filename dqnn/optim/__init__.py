"""Optax pieces for training quantized models: the quantizers' own update rules (DQ's direct
update), parameter groups, and any optimizer made DQ-correct (`wrap_optimizer`)."""
from dqnn.optim.direct_update import direct_update
from dqnn.optim.gradients import normalize_level_gradients, weight_decay
from dqnn.optim.groups import decay_mask, parameter_groups
from dqnn.optim.optimizer import create_optimizer, wrap_optimizer
from dqnn.optim.projection import project_dq_params
from dqnn.optim.tree import map_quantizers
