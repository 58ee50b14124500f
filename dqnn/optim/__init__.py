"""Optax pieces for training quantized models: the direct update and parameter groups."""
from dqnn.optim.direct_update import direct_update, map_dq_weights
from dqnn.optim.gradients import normalize_level_gradients, weight_decay
from dqnn.optim.groups import GROUPS, create_optimizer, parameter_groups
