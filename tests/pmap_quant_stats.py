"""A `pmap` step on 2 virtual CPU devices, with and without `sync_quant_stats`, and a replicated
array whose device copies differ: `check_replicated` accepts only the synchronised state.
Run by tests/test_porting.py in a subprocess (XLA_FLAGS=--xla_force_host_platform_device_count=2);
prints a JSON report."""
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import jax_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dqnn.layers import QuantConv, QuantStateError, check_replicated, sync_quant_stats


def refitted_quant_stats(sync: bool):
  conv = QuantConv(4, (3, 3), w_bits=2, a_bits=2, use_running_average=False)
  images = jax.nn.relu(jax.random.normal(jax.random.key(1), (2, 4, 6, 6, 3)))  # per device
  variables = jax_utils.replicate(conv.init(jax.random.key(0), images[0]))

  def step(variables, images):
    _, new = conv.apply(variables, images, mutable=['quant_stats'])
    return sync_quant_stats(new['quant_stats'], 'batch') if sync else new['quant_stats']

  return jax.pmap(step, axis_name='batch')(variables, images)


def error_of(check):
  try:
    check()
  except QuantStateError as error:
    return str(error)
  return None


def main():
  assert jax.device_count() == 2, jax.devices()
  mesh = Mesh(np.array(jax.devices()), ('batch',))
  # What shard_map with check_vma=False can return: one "replicated" array, two values.
  diverged = jax.make_array_from_single_device_arrays(
      (3,), NamedSharding(mesh, P()),
      [jax.device_put(jnp.full(3, float(i)), device) for i, device in enumerate(jax.devices())])
  print(json.dumps({
      'unsynchronised': error_of(lambda: check_replicated(refitted_quant_stats(sync=False))),
      'synchronised': error_of(lambda: check_replicated(refitted_quant_stats(sync=True))),
      'replicated_array': error_of(lambda: check_replicated({'basis': diverged})),
      'replicated_equal': error_of(lambda: check_replicated(
          {'basis': jax.device_put(jnp.ones(3), NamedSharding(mesh, P()))})),
  }))


if __name__ == '__main__':
  main()
