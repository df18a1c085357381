"""Every public factory rejects bad input with a message naming it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lionx

BAD = [
    (lambda: lionx.scale_by_lion(b1=1.5), ValueError, 'b1=1.5'),
    (lambda: lionx.scale_by_lion(b1=-0.1), ValueError, 'b1=-0.1'),
    (lambda: lionx.scale_by_lion(b2=2), ValueError, 'b2=2'),
    (lambda: lionx.scale_by_lion(b2=float('nan')), ValueError, 'b2=nan'),
    (lambda: lionx.scale_by_lion(b1='0.9'), TypeError, "b1='0.9'"),
    (lambda: lionx.scale_by_lion(b1=True), TypeError, 'b1=True'),
    (lambda: lionx.lion(-1e-3), ValueError, 'learning_rate=-0.001'),
    (lambda: lionx.lion(1e-3, weight_decay=-0.1), ValueError,
     'weight_decay=-0.1'),
    (lambda: lionx.lion(1e-3, b1=1.1), ValueError, 'b1=1.1'),
    (lambda: lionx.cautious_lion(-1.0), ValueError, 'learning_rate=-1.0'),
    (lambda: lionx.lion_k(1e-3, reshaper='sign'), TypeError, "reshaper='sign'"),
    (lambda: lionx.lp_reshaper(0.5), ValueError, 'p=0.5'),
    (lambda: lionx.lp_reshaper(float('inf')), ValueError, 'p=inf'),
    (lambda: lionx.lp_reshaper(2, scope='layer'), ValueError, "scope='layer'"),
    (lambda: lionx.sparse_sign_reshaper(0.0), ValueError, 'threshold=0.0'),
    (lambda: lionx.sparse_sign_reshaper(-1), ValueError, 'threshold=-1'),
    (lambda: lionx.topk_sign_reshaper(0), ValueError, 'k=0'),
    (lambda: lionx.topk_sign_reshaper(-3), ValueError, 'k=-3'),
    (lambda: lionx.topk_sign_reshaper(2.5), TypeError, 'k=2.5'),
    (lambda: lionx.topk_sign_reshaper(fraction=0.0), ValueError,
     'fraction=0.0'),
    (lambda: lionx.topk_sign_reshaper(fraction=1.5), ValueError,
     'fraction=1.5'),
    (lambda: lionx.topk_sign_reshaper(), ValueError, 'k=None, fraction=None'),
    (lambda: lionx.topk_sign_reshaper(2, fraction=0.5), ValueError,
     'k=2, fraction=0.5'),
    (lambda: lionx.topk_sign_reshaper(2, scope='all'), ValueError,
     "scope='all'"),
    (lambda: lionx.huber_reshaper(0), ValueError, 'e=0'),
    (lambda: lionx.tanh_reshaper(-2.0), ValueError, 'beta=-2.0'),
    (lambda: lionx.add_decoupled_weight_decay(-1.0), ValueError,
     'weight_decay=-1.0'),
    (lambda: lionx.add_decoupled_weight_decay(0.1, implicit=True), ValueError,
     'learning_rate=None'),
    (lambda: lionx.add_decoupled_weight_decay(0.1, implicit='yes'), TypeError,
     "implicit='yes'"),
    (lambda: lionx.add_decoupled_weight_decay(0.1, mask='w'), TypeError,
     "mask='w'"),
    (lambda: lionx.effective_weight_decay(-0.1), ValueError,
     'weight_decay=-0.1'),
    (lambda: lionx.effective_weight_decay(0.1, weight_decay_convention=1),
     ValueError, 'weight_decay_convention=1'),
    (lambda: lionx.effective_weight_decay(0.1, learning_rate='x'), TypeError,
     "learning_rate='x'"),
    (lambda: lionx.lion(1e-3, weight_decay_convention='paper',
                        peak_learning_rate=1e-3), ValueError,
     'peak_learning_rate=0.001'),
    (lambda: lionx.lp_reshaper(True), TypeError, 'p=True'),
    (lambda: lionx.huber_reshaper('1'), TypeError, "e='1'"),
    (lambda: lionx.cautious('sign'), TypeError, "inner='sign'"),
    (lambda: lionx.scale_by_lion(mu_dtype='float128x'), TypeError,
     "mu_dtype='float128x'"),
    # An array is not a dtype (jnp.dtype(array) is deprecated in JAX).
    (lambda: lionx.scale_by_lion(mu_dtype=np.array(1.0)), TypeError,
     'mu_dtype=array'),
    (lambda: lionx.lion(1e-3, mu_dtype=jnp.zeros((), jnp.bfloat16)),
     TypeError, 'mu_dtype=Array'),
    (lambda: lionx.compensated(lionx.lion(1e-3), residual_dtype=None),
     TypeError, 'residual_dtype=None: expected jnp.int8 or jnp.int16'),
    (lambda: lionx.compensated(lionx.lion(1e-3), np.zeros(2, np.int8)),
     TypeError, 'residual_dtype=array'),
    (lambda: lionx.quantized.dequantize(
        lionx.quantized.quantize(jnp.ones(4)), (4,), np.array(1.0)),
     TypeError, 'dtype=array'),
    (lambda: lionx.quantized.dequantize(
        lionx.quantized.quantize(jnp.ones(4)), (4,), None),
     TypeError, 'dtype=None: expected a float dtype'),
]


@pytest.mark.parametrize('make,error,text', BAD)
def test_bad_arguments_raise_at_construction(make, error, text):
  with pytest.raises(error, match=text.replace('(', r'\(')):
    make()


def test_mask_structure_mismatch():
  params = {'w': jnp.ones(2), 'b': jnp.ones(1)}
  opt = lionx.lion(0.1, mask={'w': True, 'other': False})
  with pytest.raises(ValueError, match='mask has tree structure'):
    opt.init(params)


def test_mask_non_bool_leaves():
  params = {'w': jnp.ones(2)}
  opt = lionx.lion(0.1, mask={'w': 1})
  with pytest.raises(TypeError, match='mask has a leaf 1'):
    opt.init(params)


def test_traced_mask_leaf_is_refused():
  params = {'w': jnp.ones(2)}

  @jax.jit
  def init(flag):
    return lionx.lion(0.1, mask={'w': flag}).init(params)

  with pytest.raises(TypeError, match='mask has a traced leaf'):
    init(jnp.array(True))


def test_update_structure_mismatch_never_broadcasts():
  opt = lionx.lion(0.1)
  params = {'w': jnp.ones(3)}
  state = opt.init(params)
  with pytest.raises(ValueError, match='updates has tree structure'):
    opt.update({'w': jnp.ones(3), 'x': jnp.ones(1)}, state, params)
  with pytest.raises(ValueError, match=r'shape \(1,\) where the momentum'):
    opt.update({'w': jnp.ones(1)}, state, params)


def test_weight_decay_needs_params():
  tx = lionx.add_decoupled_weight_decay(0.1)
  with pytest.raises(ValueError, match='params=None'):
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_schedules_and_traced_values_are_accepted():
  lionx.lion(optax.constant_schedule(0.1), weight_decay=lambda c: 0.1)
  lionx.lion(jnp.array(0.1), b1=jnp.array(0.9))


def test_compensated_params_of_another_structure():
  tx = lionx.compensated(lionx.lion(1e-3))
  state = tx.init({'w': jnp.ones(3, jnp.bfloat16)})
  with pytest.raises(ValueError, match='params has tree structure'):
    lionx.quantized.compensated_params(jnp.ones(3, jnp.bfloat16), state)
