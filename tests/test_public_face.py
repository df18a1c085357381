"""Issue 23, the public face: scale_by_lion says it is not optax's, one way
to ask for 8-bit momentum, and the internals under lionx.distributed and
lionx.quantized (the old top-level names deprecated for one release)."""

import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lionx

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_scale_by_lion_says_it_emits_c_not_sign_first():
  first = lionx.scale_by_lion.__doc__.strip().splitlines()[0]
  assert 'not optax' in first and 'sign' in first, first
  api = (ROOT / 'docs' / 'api' / 'index.md').read_text()
  assert 'is not `optax.scale_by_lion`' in api
  assert '**not** $\\operatorname{sign}(c_k)$' in api


def test_the_8bit_factory_is_deprecated_and_the_same_as_mu_dtype_int8():
  with pytest.warns(DeprecationWarning, match=(
      r'lionx.scale_by_lion_8bit is deprecated since lionx 0.3 .*use '
      r'lionx.scale_by_lion\(b1, b2, mu_dtype=jnp.int8\)')):
    old = lionx.scale_by_lion_8bit(0.8, 0.95)
  new = lionx.scale_by_lion(0.8, 0.95, mu_dtype=jnp.int8)
  rng = np.random.default_rng(0)
  params = {'w': jnp.zeros((3, 300)), 'b': jnp.zeros(7)}
  s_old, s_new = old.init(params), new.init(params)
  for _ in range(3):
    g = jax.tree.map(
        lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32),
        params)
    c_old, s_old = old.update(g, s_old, params)
    c_new, s_new = new.update(g, s_new, params)
    for a, b in zip(jax.tree.leaves((c_old, s_old)),
                    jax.tree.leaves((c_new, s_new))):
      np.testing.assert_array_equal(a, b)
  assert type(s_new) is lionx.ScaleByLion8bitState


@pytest.mark.parametrize('name,new', [
    ('collective_bytes', 'lionx.distributed.collective_bytes'),
    ('sign_vote', 'lionx.distributed.sign_vote'),
    ('quantize', 'lionx.quantized.quantize'),
    ('dequantize', 'lionx.quantized.dequantize'),
    ('QuantizedArray', 'lionx.quantized.QuantizedArray'),
    ('compensated_params', 'lionx.quantized.compensated_params'),
])
def test_moved_names_warn_and_still_work(name, new):
  with pytest.warns(DeprecationWarning, match=(
      rf'lionx.{name} is deprecated since lionx 0.3 and will be removed in '
      rf'0.4: use {new}\.')):
    old = getattr(lionx, name)
  module, attribute = new.rsplit('.', 1)
  assert old is getattr(
      {'lionx.distributed': lionx.distributed,
       'lionx.quantized': lionx.quantized}[module], attribute)
  assert name not in lionx.__all__
  with pytest.warns(DeprecationWarning):
    exec(f'from lionx import {name}', {})  # noqa: S102


def test_new_submodules_and_no_warning_on_import():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    from lionx import distributed, quantized  # pylint: disable=all
    namespace = {}
    exec('from lionx import *', namespace)  # noqa: S102
  assert set(distributed.__all__) == {
      'DistributedLionState', 'collective_bytes', 'distributed_lion',
      'sign_vote'}
  assert distributed.distributed_lion is lionx.distributed_lion
  assert set(quantized.__all__) == {
      'QuantizedArray', 'compensated_params', 'dequantize', 'quantize'}
  q = quantized.quantize(jnp.array([1.0, -0.5, 0.0, 2.0]), 2)
  np.testing.assert_allclose(quantized.dequantize(q, (4,)),
                             [1.0, -0.5, 0.0, 2.0], rtol=1e-2)
  with pytest.raises(AttributeError, match="no attribute 'nothing'"):
    lionx.nothing  # pylint: disable=pointless-statement
