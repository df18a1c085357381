"""Defaults, the argument named by each error, and output dtypes: the
boundaries of the public API that mutation testing (tests/MUTATION.md)
found unchecked. Each expectation comes from the docstrings."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lionx
from tests import reference


# effective_weight_decay: count defaults to 0, the convention to 'paper'.

def test_effective_weight_decay_defaults():
  schedule = lambda n: 0.1 * (n + 1)  # noqa: E731
  np.testing.assert_allclose(lionx.effective_weight_decay(schedule), 0.1,
                             rtol=1e-6)
  np.testing.assert_allclose(lionx.effective_weight_decay(0.3), 0.3,
                             rtol=1e-6)


def test_effective_weight_decay_is_float32_even_under_x64():
  with jax.enable_x64(True):
    for lam in (lionx.effective_weight_decay(0.1),
                lionx.effective_weight_decay(
                    lambda n: np.float64(0.1), 2,
                    weight_decay_convention='independent',
                    learning_rate=0.5)):
      assert lam.dtype == jnp.float32 and lam.shape == ()


@pytest.mark.parametrize('call,error,text', [
    (lambda: lionx.effective_weight_decay(-1.0), ValueError,
     'weight_decay=-1.0'),
    (lambda: lionx.effective_weight_decay(0.1, -2), ValueError, 'count=-2'),
    (lambda: lionx.effective_weight_decay(
        0.1, weight_decay_convention='independent', learning_rate=-0.5),
     ValueError, 'learning_rate=-0.5'),
    (lambda: lionx.effective_weight_decay(lambda n: jnp.ones(2)), TypeError,
     r'weight_decay=.* returned .* at step 0'),
    (lambda: lionx.sparse_sign_reshaper(0.0), ValueError, 'threshold=0.0'),
])
def test_errors_name_the_argument(call, error, text):
  with pytest.raises(error, match=text):
    call()


# cautious: what it forwards to the inner transform, and what it refuses.

def _emit(u):
  return optax.stateless(lambda updates, params: u)


def test_cautious_forwards_params_to_the_inner_transform():
  """With a weight decay inside, u = sign(g) + wd theta needs the params."""
  g = jnp.array([1.0, -1.0, 2.0, 0.0])
  theta = jnp.array([4.0, 4.0, -1.0, 3.0])
  tx = lionx.cautious(optax.chain(lionx.sign_reshaper(),
                                  lionx.add_decoupled_weight_decay(0.5)))
  out, _ = tx.update(g, tx.init(theta), theta)
  u = np.sign(np.asarray(g)) + 0.5 * np.asarray(theta)  # (3, 1, 0.5, 1.5)
  np.testing.assert_allclose(out, reference.cautious_mask(u, g), rtol=1e-6)


def test_cautious_forwards_extra_args():
  def update(updates, state, params=None, *, scale):
    del params
    return jax.tree.map(lambda u: scale * u, updates), state
  inner = optax.GradientTransformationExtraArgs(
      lambda params: optax.EmptyState(), update)
  tx = lionx.cautious(inner)
  g = jnp.array([1.0, -2.0, 0.0])
  out, _ = tx.update(g, tx.init(g), None, scale=3.0)
  np.testing.assert_allclose(out, reference.cautious_mask(3 * g, g),
                             rtol=1e-6)


@pytest.mark.parametrize('u,g,error,text', [
    ({'a': jnp.ones(2)}, jnp.ones(2), ValueError,
     'updates has tree structure .* but the gradients has'),
    (jnp.ones(2, jnp.int32), jnp.ones(2), TypeError,
     'updates has a leaf at .* of dtype int32'),
    (jnp.ones(2), jnp.ones(2, jnp.int32), TypeError,
     'grads has a leaf at .* of dtype int32'),
])
def test_cautious_refuses_bad_inner_output_and_grads(u, g, error, text):
  tx = lionx.cautious(_emit(u))
  with pytest.raises(error, match=text):
    tx.update(g, tx.init(jnp.zeros(2)))


def test_reshaper_names_carry_their_parameter():
  for reshaper, start, value in (
      (lionx.sparse_sign_reshaper(0.5), 'sparse_sign', '0.5'),
      (lionx.huber_reshaper(2.5), 'huber', '2.5'),
      (lionx.topk_sign_reshaper(3), 'topk_sign', '3'),
      (lionx.lp_reshaper(1.5), 'lp', '1.5'),
      (lionx.tanh_reshaper(4.0), 'tanh', '4')):
    assert reshaper.name.startswith(start) and value in reshaper.name
  assert lionx.sign_reshaper().name == 'sign'


def test_add_decoupled_weight_decay_default_is_1e_3():
  tx = lionx.add_decoupled_weight_decay()
  theta = jnp.array([2.0, -4.0])
  out, _ = tx.update(jnp.zeros(2), tx.init(theta), theta)
  np.testing.assert_allclose(out, [2e-3, -4e-3], rtol=1e-6)
