"""Every decision at exactly zero, against tests/reference.py.

Gaussian gradients are never exactly 0, so the tests elsewhere never reach
the coordinates where a sign, a mask or a threshold meets 0: sparse
gradients, dead units, unused embedding rows, zero (or -0.0) parameters,
tied votes. Each test here puts exact zeros there.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lionx
from tests import reference
from tests.test_distributed import mesh_of
from tests.test_distributed import run_fed

Z = -0.0  # IEEE negative zero: a zero like any other in every rule here.


def _fixed(u):
  """A stateless transform that emits ``u`` whatever the gradient."""
  return optax.stateless(lambda updates, params: jnp.asarray(u, jnp.float32))


def _apply(reshaper, x):
  return reshaper.update(x, reshaper.init(x))[0]


# 1. The cautious mask phi = 1[u g > 0]: a zero in u or in g is no agreement.

MASK_CASES = {
    # u != 0 where g = 0 (a dead unit with momentum), u = 0 where g != 0,
    # both 0, -0.0 on either side, agreement and disagreement.
    'mixed': ([1.0, -1.0, 0.0, 2.0, 0.5, -3.0, 1.0, Z, 1.0],
              [0.0, Z, 0.0, 1.0, -1.0, -2.0, 3.0, 5.0, Z]),
    'g_all_zero': ([1.0, -2.0, 3.0, 0.5], [0.0, 0.0, Z, 0.0]),
    'u_all_zero': ([0.0, Z, 0.0], [1.0, -1.0, 0.0]),
    'all_agree': ([1.0, -1.0, 2.0], [3.0, -0.5, 1.0]),
}


@pytest.mark.parametrize('name', sorted(MASK_CASES))
def test_cautious_mask_at_zero(name):
  u, g = MASK_CASES[name]
  tx = lionx.cautious(_fixed(u))
  out, _ = jax.jit(tx.update)(jnp.asarray(g), tx.init(jnp.zeros(len(g))))
  np.testing.assert_allclose(out, reference.cautious_mask(u, g), rtol=1e-6,
                             atol=0)


def test_cautious_mask_hand_computed():
  # phi = (0, 0, 0, 1, 0, 1, 1, 0, 0): 3 kept, n / (3 + 1) = 9 / 4.
  u, g = MASK_CASES['mixed']
  tx = lionx.cautious(_fixed(u))
  out, _ = tx.update(jnp.asarray(g), tx.init(jnp.zeros(9)))
  np.testing.assert_array_equal(
      out, [0, 0, 0, 4.5, 0, -6.75, 2.25, 0, 0])
  # No agreement at all: n / (0 + 1) times nothing.
  u, g = MASK_CASES['g_all_zero']
  tx = lionx.cautious(_fixed(u))
  out, _ = tx.update(jnp.asarray(g), tx.init(jnp.zeros(4)))
  np.testing.assert_array_equal(out, 0.0)


def test_cautious_mask_where_the_product_underflows():
  """u g = 1e-40 is below float32's normal range, but u and g agree: the
  mask keeps the entry, and the rescale counts it (lp reshapers emit such
  u for small coordinates)."""
  u = np.array([1e-20, 1.0, -1e-20, 1.0, 1e-30], np.float32)
  g = np.array([1e-20, 1.0, 1e-20, -1.0, 1e-25], np.float32)
  tx = lionx.cautious(_fixed(u))
  out, _ = jax.jit(tx.update)(jnp.asarray(g), tx.init(jnp.zeros(5)))
  np.testing.assert_allclose(out, reference.cautious_mask(u, g), rtol=1e-6,
                             atol=0)
  np.testing.assert_allclose(out[1], 5 / 4, rtol=1e-6)  # 3 kept of 5


def _sparse_gradients(rng, steps, shape, dead_rows, dead_after):
  """Gaussian gradients with exact zeros: rows never used (an embedding's
  unused rows), rows that die after ``dead_after`` steps (dead units), and
  scattered zeros and -0.0 (sparse gradients)."""
  out = []
  for k in range(steps):
    g = rng.standard_normal(shape)
    g[dead_rows] = 0.0
    if k >= dead_after:
      g[-1] = Z
    g[rng.random(shape) < 0.2] = 0.0
    out.append(g.astype(np.float32))
  return out


def test_cautious_lion_on_sparse_gradients_is_the_reference():
  """Once a unit dies its momentum still says move, but g = 0 there: the
  mask must drop it (a zero gradient is not agreement)."""
  rng = np.random.default_rng(0)
  shape, lr, wd, b1, b2 = (6, 5), 0.01, 0.1, 0.95, 0.98
  grads = _sparse_gradients(rng, 8, shape, [2], dead_after=3)
  theta0 = rng.standard_normal(shape).astype(np.float32)
  opt = lionx.cautious_lion(lr, b1, b2, weight_decay=wd)
  params, state = jnp.asarray(theta0), opt.init(jnp.asarray(theta0))
  update = jax.jit(opt.update)
  theta, m = theta0.astype(np.float64), np.zeros(shape)
  for g in grads:
    updates, state = update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
    theta, m = reference.cautious_lion_step(
        theta, m, g.astype(np.float64), lr, b1, b2, wd)
  np.testing.assert_allclose(params, theta, rtol=1e-5, atol=1e-6)
  # The unused row moved only by the decay.
  np.testing.assert_allclose(params[2], theta0[2] * (1 - lr * wd) ** 8,
                             rtol=1e-5)


# 2. Cautious weight decay 1[u theta >= 0]: the >= includes every zero.

@pytest.mark.parametrize('u,theta', [
    ([0.0, Z, 0.0, Z], [3.0, -3.0, Z, 0.0]),  # u = 0: always decayed
    ([1.0, -1.0, 2.0, -2.0], [0.0, Z, Z, 0.0]),  # theta = 0: nothing to add
    ([1.0, -1.0, 1.0, -1.0], [2.0, 2.0, -2.0, -2.0]),  # agree or not
])
def test_cautious_weight_decay_at_zero(u, theta):
  tx = lionx.add_decoupled_weight_decay(0.5, cautious_weight_decay=True)
  theta_j = jnp.asarray(theta)
  out, _ = tx.update(jnp.asarray(u), tx.init(theta_j), theta_j)
  # The reference's theta - lr (u + wd 1[u theta >= 0] theta) at lr = 1.
  want = np.asarray(theta) - reference.cautious_weight_decay_step(
      np.asarray(theta), np.asarray(u), 1.0, 0.5)
  np.testing.assert_array_equal(out, want)


def test_cautious_weight_decay_where_the_product_underflows():
  """u theta = -1e-50 flushes to -0 in float32; the sign rule still says
  they disagree, so theta is not decayed."""
  u = np.array([-1e-30, 1e-30, 1e-30, -1e-30], np.float32)
  theta = np.array([1e-20, 1e-20, -1e-20, -1e-20], np.float32)
  tx = lionx.add_decoupled_weight_decay(0.5, cautious_weight_decay=True)
  out, _ = jax.jit(tx.update)(jnp.asarray(u), tx.init(jnp.asarray(theta)),
                              jnp.asarray(theta))
  want = theta.astype(np.float64) - reference.cautious_weight_decay_step(
      theta.astype(np.float64), u.astype(np.float64), 1.0, 0.5)
  np.testing.assert_allclose(out, want, rtol=1e-6, atol=0)


def test_lion_with_cautious_decay_on_dead_rows_is_the_reference():
  """A row never used has u = 0 at every step, so it is always decayed."""
  rng = np.random.default_rng(1)
  shape, lr, wd, b1, b2 = (5, 4), 0.05, 0.5, 0.9, 0.99
  grads = _sparse_gradients(rng, 6, shape, [0, 3], dead_after=2)
  theta0 = rng.standard_normal(shape).astype(np.float32)
  theta0[1, :2] = 0.0
  opt = lionx.lion(lr, b1, b2, weight_decay=wd, cautious_weight_decay=True)
  params, state = jnp.asarray(theta0), opt.init(jnp.asarray(theta0))
  update = jax.jit(opt.update)
  theta, m = theta0.astype(np.float64), np.zeros(shape)
  for g in grads:
    updates, state = update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
    g64 = g.astype(np.float64)
    u = np.sign(b1 * m + (1 - b1) * g64)
    theta = reference.cautious_weight_decay_step(theta, u, lr, wd)
    m = b2 * m + (1 - b2) * g64
  np.testing.assert_allclose(params, theta, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(params[0], theta0[0] * (1 - lr * wd) ** 6,
                             rtol=1e-5)


# 3. Lion's sign at c = 0, through the whole optimizer, every momentum dtype.

@pytest.mark.parametrize('mu_dtype', [None, jnp.bfloat16, jnp.int8])
def test_lion_on_sparse_gradients_is_algorithm1(mu_dtype):
  """Unused rows never move (c = 0 there); dead rows keep moving by
  sign(b1 m) (Algorithm 1 has no rule for g = 0)."""
  lr, wd, b1, b2 = 0.1, 0.0, 0.9, 0.99
  g1 = np.array([[1.0, -0.5, 0.0, 2.0], [0.0, 0.0, Z, 0.0],
                 [Z, 1.5, -1.0, 0.0]], np.float32)
  g2 = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, Z, 0.0, 0.0],
                 [1.0, 0.0, 0.0, Z]], np.float32)
  opt = lionx.lion(lr, b1, b2, mu_dtype=mu_dtype, weight_decay=wd)
  params = jnp.zeros(g1.shape)
  state = opt.init(params)
  theta, m = np.zeros(g1.shape), np.zeros(g1.shape)
  for g in (g1, g2):
    updates, state = jax.jit(opt.update)(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
    theta, m = reference.lion_step(theta, m, g.astype(np.float64), lr, b1,
                                   b2, wd)
  np.testing.assert_allclose(params, theta, rtol=1e-6, atol=0)
  np.testing.assert_array_equal(np.asarray(params)[1], 0.0)  # unused row
  # Step 2 of row 0: g = 0, c = b1 m_1 = b1 (1 - b2) g_1: sign(g_1) again.
  np.testing.assert_allclose(np.asarray(params)[0],
                             -2 * lr * np.sign(g1[0]), rtol=1e-6)


# 4. Reshapers: the thresholds meet 0 or the threshold itself.

def test_sign_reshaper_at_zero_and_negative_zero():
  x = jnp.array([0.0, Z, 1e-30, -1e-30])
  np.testing.assert_array_equal(_apply(lionx.sign_reshaper(), x),
                                [0.0, 0.0, 1.0, -1.0])


@pytest.mark.parametrize('e', [0.5, 2.0, 0.25])
def test_sparse_sign_at_the_threshold_and_zero(e):
  """|x| = e is in the dead zone (K is flat there up to e)."""
  up = float(np.nextafter(np.float32(e), np.float32(np.inf)))
  x = np.array([e, -e, 0.0, Z, up, -up, e / 2, 3 * e], np.float32)
  out = _apply(lionx.sparse_sign_reshaper(e), jnp.asarray(x))
  np.testing.assert_array_equal(out, reference.sparse_sign(x, e))
  np.testing.assert_array_equal(out, [0, 0, 0, 0, 1, -1, 0, 1])
  # K(x) = sum max(|x| - e, 0): only 3e and the two ulps above e count.
  np.testing.assert_allclose(
      lionx.sparse_sign_reshaper(e).k(jnp.asarray(x)),
      2 * e + 2 * (up - e), rtol=1e-6)


@pytest.mark.parametrize('x,k', [
    ([0.0, 0.0, 3.0, 0.0, Z, -1.0], 3),  # a tie at 0 fills the top 3
    ([0.0, Z, 0.0, 0.0], 2),  # nothing to move
    ([0.0, -2.0, 0.0, 2.0], 2),  # a tie in magnitude, no zero chosen
    ([1.0, 0.0, 0.0, 0.0, 0.0], 1),
])
def test_topk_sign_with_zeros(x, k):
  out = _apply(lionx.topk_sign_reshaper(k), jnp.asarray(x))
  np.testing.assert_array_equal(out, reference.topk_sign(x, k))


def test_topk_sign_global_over_a_zero_leaf_and_fractions():
  tree = {'a': jnp.zeros(3), 'b': jnp.array([0.0, 2.0, -1.0])}
  for k in (2, 3, 4):
    out = _apply(lionx.topk_sign_reshaper(k, scope='global'), tree)
    want = reference.topk_sign(np.r_[np.zeros(3), [0.0, 2.0, -1.0]], k)
    np.testing.assert_array_equal(np.r_[out['a'], out['b']], want)
  # fraction f of n moves ceil(f n): 0.5 of 4 is 2, 0.3 of 4 is 2.
  x = jnp.array([0.0, 3.0, 0.0, -5.0])
  for f, k in ((0.5, 2), (0.3, 2), (0.25, 1), (0.01, 1), (1.0, 4)):
    out = _apply(lionx.topk_sign_reshaper(fraction=f), x)
    np.testing.assert_array_equal(out, reference.topk_sign(x, k))
  assert float(lionx.topk_sign_reshaper(2).k(x)) == 8.0


@pytest.mark.parametrize('scope', ['global', 'leaf'])
@pytest.mark.parametrize('p', [1.0, 1.5, 2.0, 3.0])
def test_lp_with_zero_entries_and_a_zero_leaf(p, scope):
  tree = {'a': jnp.zeros(3), 'b': jnp.array([3.0, 0.0, -4.0, Z])}
  out = _apply(lionx.lp_reshaper(p, scope), tree)
  np.testing.assert_array_equal(out['a'], 0.0)  # not NaN: the norm is 0
  flat = np.r_[np.zeros(3), [3.0, 0.0, -4.0, 0.0]]
  want = (reference.lp_grad(flat, p)[3:] if scope == 'global'
          else reference.lp_grad(flat[3:], p))
  np.testing.assert_allclose(out['b'], want, rtol=1e-6, atol=0)


def test_huber_at_the_threshold_and_zero():
  x = np.array([2.0, -2.0, 0.0, Z, 1.0, -5.0], np.float32)
  out = _apply(lionx.huber_reshaper(2.0), jnp.asarray(x))
  np.testing.assert_array_equal(out, reference.huber_grad(x, 2.0))


# 5. Distributed Lion: zero votes and ties.

# Worker i's gradient (one step, b1 irrelevant from zero momentum): per
# coordinate, a tie of 4 against 4; one +1 and 7 zeros; 3 +1, 2 -1 and 3
# zeros; no vote at all; a tie of 1 against 1 among 6 zeros.
VOTES = np.array([
    [1, 1, 1, 0, 1], [1, 0, 1, 0, -1], [1, 0, 1, 0, 0], [1, 0, -1, 0, 0],
    [-1, 0, -1, 0, 0], [-1, 0, 0, 0, 0], [-1, 0, 0, 0, 0], [-1, 0, 0, 0, 0],
], np.float32)


@pytest.mark.parametrize('aggregation', ['majority', 'average'])
@pytest.mark.parametrize('communication', ['all_to_all', 'all_gather'])
def test_distributed_votes_with_zeros_and_ties(aggregation, communication):
  n = VOTES.shape[0]
  grads = (VOTES * np.float32(0.5))[None]  # (steps=1, workers, d)
  grads[0, 2, 1] = Z
  theta = jnp.full(VOTES.shape[1], 2.0)
  opt = lionx.distributed_lion(
      0.1, weight_decay=0.0, aggregation=aggregation,
      communication=communication)
  params, _ = run_fed(opt, theta, grads, mesh_of(n))
  step = reference.sign_votes(VOTES, aggregation)
  np.testing.assert_allclose(np.asarray(params), 2.0 - 0.1 * step,
                             rtol=1e-6, atol=0)
  if aggregation == 'majority':
    np.testing.assert_array_equal(step, [0, 1, 1, 0, 0])
  else:
    np.testing.assert_array_equal(step, [0, 1 / 8, 1 / 8, 0, 0])


# 6. Masks: a leaf that is not decayed is not decayed, zeros or not.

def test_masked_decay_with_zero_updates():
  params = {'w': jnp.array([2.0, -3.0, 0.0]), 'b': jnp.array([4.0, Z])}
  updates = {'w': jnp.array([0.0, Z, 1.0]), 'b': jnp.array([0.0, 1.0])}
  for cautious in (False, True):
    tx = lionx.add_decoupled_weight_decay(
        0.5, mask={'w': True, 'b': False}, cautious_weight_decay=cautious)
    out, _ = tx.update(updates, tx.init(params), params)
    np.testing.assert_array_equal(out['b'], updates['b'])
    np.testing.assert_array_equal(out['w'], [1.0, -1.5, 1.0])
