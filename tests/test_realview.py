"""lionx._src.realview: a complex leaf of shape s is the real leaf
stack([z.real, z.imag], -1) of shape s + (2,) (PyTorch's view_as_real),
checked against NumPy, and real_view_transformation hands the wrapped
transform exactly what its docstring says."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lionx._src import realview

Z = np.array([[1.5 - 2.0j, 0.0 + 1.0j, -3.0 + 0.25j]], np.complex64)


def test_view_as_real_stacks_the_parts_on_a_new_last_axis():
  out = realview.view_as_real(jnp.asarray(Z))
  assert out.shape == Z.shape + (2,) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, np.stack([Z.real, Z.imag], -1))
  back = realview.view_as_complex(out, jnp.asarray(Z))
  assert back.dtype == jnp.complex64
  np.testing.assert_array_equal(back, Z)


def test_real_leaves_pass_through_untouched():
  x = jnp.arange(3.0)
  assert realview.view_as_real(x) is x
  assert realview.view_as_complex(x, x) is x


@pytest.mark.parametrize('value,expected', [
    (jnp.asarray(Z), True), (Z.astype(np.complex128), True), (1j, True),
    (np.complex64(1j), True), (jnp.ones(2), False), (3, False),
    (2.5, False), ('1j', False), (None, False)], ids=repr)
def test_is_complex(value, expected):
  assert realview.is_complex(value) is expected


def test_dtypes_of_the_parts_and_back():
  assert realview.real_dtype(jnp.complex64) == jnp.float32
  assert realview.real_dtype(jnp.complex128) == jnp.float64
  assert realview.real_dtype(jnp.bfloat16) == jnp.bfloat16
  assert realview.complex_dtype(jnp.float32) == jnp.complex64
  assert realview.complex_dtype(np.float64) == jnp.complex128
  with pytest.raises(TypeError, match='bfloat16 has no complex counterpart'):
    realview.complex_dtype(jnp.bfloat16)


def test_on_real_view_applies_fn_to_the_views_of_every_argument():
  seen = []

  def fn(x, y):
    seen.append((x.shape, y.shape))
    return 2.0 * x + y

  out = realview.on_real_view(fn)(jnp.asarray(Z), jnp.asarray(Z))
  assert seen == [(Z.shape + (2,), Z.shape + (2,))]
  np.testing.assert_array_equal(out, 3.0 * Z)


def _recording(received):
  """A transform that doubles the updates and records what update got."""

  def init_fn(params):
    received['init'] = params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    received['updates'], received['params'] = updates, params
    received['extra_args'] = extra_args
    return jax.tree.map(lambda u: 2.0 * u, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def test_real_view_transformation_hands_tx_the_real_views():
  received = {}
  tx = realview.real_view_transformation(_recording(received))
  params = {'z': jnp.asarray(Z), 'w': jnp.ones(2)}
  state = tx.init(params)
  assert received['init']['z'].shape == Z.shape + (2,)
  out, _ = tx.update(params, state, params, loss=jnp.float32(0.5))
  np.testing.assert_array_equal(received['params']['z'],
                                np.stack([Z.real, Z.imag], -1))
  np.testing.assert_array_equal(received['updates']['w'], np.ones(2))
  assert set(received['extra_args']) == {'loss'}  # extra args reach tx
  assert out['z'].dtype == jnp.complex64
  np.testing.assert_array_equal(out['z'], 2.0 * Z)
  np.testing.assert_array_equal(out['w'], 2.0 * np.ones(2))


def test_real_view_transformation_passes_no_params_as_none():
  received = {}
  tx = realview.real_view_transformation(_recording(received))
  tx.update({'z': jnp.asarray(Z)}, tx.init({'z': jnp.asarray(Z)}))
  assert received['params'] is None
  assert received['extra_args'] == {}
