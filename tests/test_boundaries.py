"""Defaults, the argument named by each error, and output dtypes: the
boundaries of the public API that mutation testing (tests/MUTATION.md)
found unchecked. Each expectation comes from the docstrings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lionx


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
