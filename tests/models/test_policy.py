import ml_collections
import pytest

from dqnn.models import QuantPolicy, create_model, layer_paths

BODY = dict(w_bits=2, a_bits=2, weight_quantizer='dq', act_quantizer='dq', weight_options=None,
            act_options=None)


def test_global_bits_reach_every_body_layer():
  assert QuantPolicy(w_bits=2, a_bits=2).layer_kwargs('stage3/block1/conv2') == BODY


@pytest.mark.parametrize('edge, first, last', [('float', (32, 32), (32, 32)),
                                               ('8bit', (8, 32), (8, 8))])
def test_first_and_last_layer_policy(edge, first, last):
  policy = QuantPolicy(w_bits=2, a_bits=2, first_layer=edge, last_layer=edge)
  for role, (w_bits, a_bits) in (('first', first), ('last', last)):
    kwargs = policy.layer_kwargs('x', role)
    assert (kwargs['w_bits'], kwargs['a_bits']) == (w_bits, a_bits)


def test_overrides_match_exact_paths_and_globs_and_apply_in_order():
  policy = QuantPolicy(w_bits=2, a_bits=2, overrides=(
      ('stage*/block0/conv1', {'w_bits': 4, 'weight_options': {'symmetric': True}}),
      ('stage2/block0/conv1', {'a_bits': 3, 'w_bits': 3}),
  ))
  assert policy.layer_kwargs('stage2/block0/conv1') == dict(
      BODY, w_bits=3, a_bits=3, weight_options={'symmetric': True})
  assert policy.layer_kwargs('stage3/block0/conv1') == dict(
      BODY, w_bits=4, weight_options={'symmetric': True})
  assert policy.layer_kwargs('stage3/block0/conv2') == BODY
  # Overrides reach the edge layers too.
  edge_override = QuantPolicy(overrides=(('head', {'w_bits': 4}),))
  assert edge_override.layer_kwargs('head', 'last')['w_bits'] == 4


def test_policy_is_hashable_with_options_and_overrides():
  config = ml_collections.ConfigDict(dict(
      w_bits=2, a_bits=2, act_options={'weighting': 'pooled'}, last_layer='8bit',
      overrides={'stage2/*': {'w_bits': 4, 'act_options': {'weighting': 'channel'}}}))
  policy = QuantPolicy.from_config(config)
  assert hash(policy) == hash(QuantPolicy.from_config(config))
  assert policy.overrides[0][0] == 'stage2/*'
  assert policy.layer_kwargs('stage2/block0/conv1')['act_options'] == {'weighting': 'channel'}


def test_config_overrides_apply_globs_first_then_exact_paths():
  # Sorted by key, 'stage2/block0/conv1' would come before 'stage?/*' and lose to it.
  config = ml_collections.ConfigDict(dict(w_bits=2, a_bits=2, overrides={
      'stage2/block0/conv1': {'w_bits': 8}, 'stage?/*': {'w_bits': 4}, 'stage2/*': {'a_bits': 4}}))
  policy = QuantPolicy.from_config(config)
  assert [pattern for pattern, _ in policy.overrides] == [
      'stage2/*', 'stage?/*', 'stage2/block0/conv1']
  assert policy.layer_kwargs('stage2/block0/conv1')['w_bits'] == 8
  assert policy.layer_kwargs('stage2/block0/conv2')['w_bits'] == 4


@pytest.mark.parametrize('fields, message', [
    (dict(w_bits=5), 'w_bits must be one of'),
    (dict(first_layer='4bit'), 'first_layer must be one of float, 8bit'),
    (dict(overrides=(('head', {'bits': 4}),)), "Override 'head' sets bits; an override can set"),
    (dict(overrides=(('head', {'a_bits': 7}),)), "a_bits of override 'head' must be one of"),
])
def test_bad_policies_fail_clearly(fields, message):
  with pytest.raises(ValueError, match=message):
    QuantPolicy(**fields)


def test_unknown_config_field_fails_clearly():
  with pytest.raises(ValueError, match='Unknown quantization policy fields: wbits'):
    QuantPolicy.from_config(ml_collections.ConfigDict(dict(wbits=2)))


def test_override_matching_no_layer_fails_listing_the_layers():
  policy = QuantPolicy(w_bits=2, a_bits=2, overrides=(('stage2/block0/conv1', {'w_bits': 4}),
                                                       ('stage9/*', {'w_bits': 4})))
  with pytest.raises(ValueError, match=r"'stage9/\*' match no layer; the layers are: stem_conv, "
                                       r'stage1/block0/conv1, .*, head\.'):
    create_model('_resnet_tiny', num_classes=10, policy=policy)


def test_layer_paths_lists_every_conv_and_dense_in_call_order():
  model = create_model('_mobilenet_v2_tiny', num_classes=10, policy=QuantPolicy())
  assert layer_paths(model, (1, 32, 32, 3)) == [
      'stem_conv', 'block0/depthwise', 'block0/project', 'block1/expand', 'block1/depthwise',
      'block1/project', 'block2/expand', 'block2/depthwise', 'block2/project', 'last_conv',
      'head']
