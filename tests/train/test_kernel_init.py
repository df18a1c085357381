"""model.kernel_init: PyTorch's Kaiming initialisers, checked against their
formulas (fan-in, gain sqrt(2)); the default stays each layer's own."""

import functools
import math

import jax
import numpy as np
import pytest
from flax import nnx

from lionx.train import config as config_lib
from lionx.train.models.vision import VisionModelConfig as ModelConfig
from lionx.train.models.vision import create_model
from lionx.train.fields import ConfigError
from tests.train.helpers import tiny_config

# Small versions of every architecture (name, fields, image shape).
MODELS = [
    ('cnn', {'width': 8}, (8, 8, 1)),
    ('mlp', {'width': 16}, (8, 8, 1)),
    ('resnet18', {'width': 2}, (8, 8, 3)),
    ('vit', {'patch_size': 2, 'hidden_size': 8, 'depth': 1, 'num_heads': 2,
             'mlp_dim': 8}, (4, 4, 3)),
]


def _leaves(name, fields, shape, init, seed=0):
  """The model's parameters by path (built once per argument set)."""
  return _built(name, tuple(sorted(fields.items())), shape, init, seed)


@functools.lru_cache(maxsize=None)
def _built(name, fields, shape, init, seed):
  model = create_model(
      ModelConfig(name=name, kernel_init=init, **dict(fields)), 5, shape,
      seed=seed)
  flat = jax.tree_util.tree_leaves_with_path(
      nnx.as_pure(nnx.state(model, nnx.Param)))
  return {jax.tree_util.keystr(path): np.asarray(x) for path, x in flat}


def _fan_in(name, kernel):
  """PyTorch's fan-in of a kernel: every axis but the output one(s)."""
  if "['attn']" in name and "['out']" in name:  # (heads, head_dim, out)
    return int(np.prod(kernel.shape[:-1]))
  if "['attn']" in name:  # query/key/value: (in, heads, head_dim)
    return kernel.shape[0]
  return int(np.prod(kernel.shape[:-1]))


@pytest.mark.slow
def test_default_keeps_each_layers_initialiser():
  # Flax's LeCun normal (truncated at 2 sigma, variance 1/fan_in).
  assert ModelConfig().kernel_init == 'default'
  kernel = _leaves('cnn', {}, (8, 8, 1), 'default')["['fc1']['kernel']"]
  std = math.sqrt(1 / 1024)
  assert kernel.std() == pytest.approx(std, rel=0.01)
  assert np.abs(kernel).max() <= 2 * std / 0.8796 * (1 + 1e-5)


@pytest.mark.slow
def test_resnet_default_is_torchvisions_fan_out():
  leaves = _leaves('resnet18', {'width': 2}, (8, 8, 3), 'default')
  kernel = leaves["['blocks'][7]['conv2']['kernel']"]  # 3x3, 16 -> 16
  fan_out = 3 * 3 * kernel.shape[-1]
  assert kernel.std() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)


@pytest.mark.slow
@pytest.mark.parametrize('name,fields,shape', MODELS)
@pytest.mark.parametrize('init', ['kaiming_normal', 'kaiming_uniform'])
def test_every_kernel_and_nothing_else(name, fields, shape, init):
  new = _leaves(name, fields, shape, init)
  old = _leaves(name, fields, shape, 'default')
  kernels = [k for k in new if k.endswith("['kernel']")]
  assert kernels
  z = []  # every kernel entry in units of sqrt(2 / fan_in)
  for key, value in new.items():
    if key in kernels:
      z.append(np.ravel(value) / math.sqrt(2 / _fan_in(key, value)))
      if name != 'resnet18':  # LeCun's variance is half of Kaiming's
        assert not np.array_equal(value, old[key]), key
    else:  # biases, norms, class token, positions: untouched
      np.testing.assert_array_equal(value, old[key], err_msg=key)
  z = np.concatenate(z)
  assert z.std() == pytest.approx(1.0, rel=0.1)
  if init == 'kaiming_uniform':  # U(+-sqrt(6 / fan_in))
    assert np.abs(z).max() <= math.sqrt(3) * (1 + 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('init,kurtosis', [('kaiming_normal', 3.0),
                                           ('kaiming_uniform', 1.8)])
def test_the_distributions(init, kurtosis):
  # fc1 of the digits CNN: 1024 x 128 weights, fan-in 1024.
  kernel = _leaves('cnn', {}, (8, 8, 1), init)["['fc1']['kernel']"]
  std = math.sqrt(2 / 1024)
  assert kernel.mean() == pytest.approx(0, abs=0.01 * std)
  assert kernel.std() == pytest.approx(std, rel=0.01)
  z = kernel / kernel.std()
  assert np.mean(z ** 4) == pytest.approx(kurtosis, abs=0.05)
  if init == 'kaiming_uniform':
    bound = math.sqrt(6 / 1024)
    assert np.abs(kernel).max() == pytest.approx(bound, rel=1e-3)
  else:  # not truncated: tails beyond 3 sigma (PyTorch's normal_)
    assert np.abs(kernel).max() > 3.5 * std


def test_seeds_differ_and_repeat():
  a = _leaves('mlp', {'width': 16}, (8, 8, 1), 'kaiming_uniform', seed=0)
  b = _leaves('mlp', {'width': 16}, (8, 8, 1), 'kaiming_uniform', seed=1)
  c = _leaves('mlp', {'width': 16}, (8, 8, 1), 'kaiming_uniform', seed=0)
  key = "['fc1']['kernel']"
  assert not np.array_equal(a[key], b[key])
  np.testing.assert_array_equal(a[key], c[key])


def test_bad_names_are_refused():
  config = tiny_config()
  config.model.kernel_init = 'xavier'
  with pytest.raises(ConfigError, match="model.kernel_init='xavier'"):
    config_lib.validate(config)
  with pytest.raises(ValueError, match="model.kernel_init='he'"):
    create_model(ModelConfig(name='cnn', kernel_init='he'), 10, (8, 8, 1))


def test_the_field_is_part_of_the_run_identity():
  config = tiny_config()
  default = config_lib.run_identity(config)
  assert default['model']['kernel_init'] == 'default'
  config = config_lib.load_config(
      'configs/default.py', ('model.kernel_init=kaiming_uniform',))
  assert config.model.kernel_init == 'kaiming_uniform'
  assert config_lib.run_identity(config)['model']['kernel_init'] == (
      'kaiming_uniform')
