"""``add_decoupled_weight_decay``'s state and errors.

The decay itself (conventions, implicit scheme, cautious mask, exact zeros)
is checked against the papers' formulas in ``test_conformance.py``,
``test_cautious_weight_decay.py`` and ``test_exact_zeros.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lionx


def test_count_is_an_int32_scalar_that_indexes_the_schedule():
  tx = lionx.add_decoupled_weight_decay(lambda count: 0.5 * count)
  params = jnp.array([2.0, -4.0])
  state = tx.init(params)
  assert state.count.dtype == jnp.int32 and state.count.shape == ()
  update = jax.jit(tx.update)
  for k in range(3):
    u, state = update(jnp.zeros(2), state, params)
    # lambda_k = 0.5 k at the k-th update (counted from 0).
    np.testing.assert_allclose(u, 0.5 * k * np.array([2.0, -4.0]))
    assert int(state.count) == k + 1 and state.count.dtype == jnp.int32


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match=r'^learning_rate=-1'):
    lionx.add_decoupled_weight_decay(0.1, learning_rate=-1.0)
  with pytest.raises(ValueError, match=r'^weight_decay=-0.5'):
    lionx.add_decoupled_weight_decay(-0.5)
  tx = lionx.add_decoupled_weight_decay(0.1)
  params = {'w': jnp.ones(2)}
  state = tx.init(params)
  with pytest.raises(ValueError, match=r'^updates has tree structure .*, '
                     r'but params has'):
    tx.update({'v': jnp.ones(2)}, state, params)
  with pytest.raises(ValueError, match=r'^updates has a leaf of shape '
                     r'\(3,\) where params has shape \(2,\)'):
    tx.update({'w': jnp.ones(3)}, state, params)
  with pytest.raises(ValueError, match=r'^params=None'):
    tx.update({'w': jnp.ones(2)}, state)
  with pytest.raises(TypeError, match='params'):
    tx.init({'w': jnp.ones(2, jnp.int32)})


# --- issue 23: the learning rate as an array (item 1), count (item 6) ---


@pytest.mark.parametrize('convention', ['independent', 'corrected'])
def test_inject_hyperparams_needs_the_peak(convention):
  """The issue's example: the injected learning rate is the array eta_t;
  taken as eta_peak it turned the parameters into NaN where the schedule
  reached 0. Now the peak is required, by name, with the fix shown."""
  import optax  # pylint: disable=g-import-not-at-top
  schedule = optax.cosine_decay_schedule(1e-2, 10)
  opt = optax.inject_hyperparams(lionx.lion)(
      learning_rate=schedule, weight_decay=0.1,
      weight_decay_convention=convention)
  with pytest.raises(ValueError, match=(
      r"^peak_learning_rate=None: weight_decay_convention='"
      + convention + r"' needs peak_learning_rate= when the learning rate "
      r'is an array.*Fix: pass the peak.*peak_learning_rate=1e-3')):
    opt.init(jnp.ones(3))
  # With the peak: the paper's decay of each convention, by hand.
  opt = optax.inject_hyperparams(lionx.lion)(
      learning_rate=schedule, weight_decay=0.1,
      weight_decay_convention=convention, peak_learning_rate=1e-2)
  params = jnp.ones(3)
  state = opt.init(params)
  step = jax.jit(opt.update)
  theta = np.ones(3)
  for t in range(12):  # past the schedule's end, where eta_t = 0
    updates, state = step(jnp.ones(3), state, params)
    params = optax.apply_updates(params, updates)
    eta = float(schedule(t))
    lam = 0.1 / 1e-2 if convention == 'independent' else 0.1 * eta / 1e-2
    theta = theta - eta * (1.0 + lam * theta)  # c > 0: sign(c) = 1
  assert np.all(np.isfinite(np.asarray(params)))
  np.testing.assert_allclose(params, theta, rtol=1e-5)


def test_an_array_learning_rate_needs_the_peak_everywhere():
  for build in (
      lambda: lionx.add_decoupled_weight_decay(
          0.1, learning_rate=jnp.asarray(1e-3),
          weight_decay_convention='independent'),
      lambda: lionx.effective_weight_decay(
          0.1, weight_decay_convention='corrected',
          learning_rate=np.asarray(1e-3)),
      lambda: jax.jit(lambda lr: lionx.effective_weight_decay(
          0.1, weight_decay_convention='independent', learning_rate=lr))(
              1e-3)):
    with pytest.raises(ValueError, match='^peak_learning_rate=None'):
      build()
  # A Python or NumPy number is the peak itself, as before.
  assert float(lionx.effective_weight_decay(
      0.1, weight_decay_convention='independent',
      learning_rate=np.float32(0.5))) == pytest.approx(0.2)
  assert float(lionx.effective_weight_decay(
      0.1, weight_decay_convention='independent',
      learning_rate=jnp.asarray(0.5), peak_learning_rate=0.25)) == (
          pytest.approx(0.4))


@pytest.mark.parametrize('count,error', [
    (1.5, TypeError), (2.0, TypeError), (np.float32(1.0), TypeError),
    (jnp.asarray(1.0), TypeError), (True, TypeError), (-1, ValueError),
    (jnp.asarray([1, 2]), TypeError), (2 ** 31, ValueError)])
def test_effective_weight_decay_count_is_an_integer(count, error):
  with pytest.raises(error, match=r'^count=.*(integer|step count)'):
    lionx.effective_weight_decay(0.1, count=count)


def test_effective_weight_decay_takes_integer_counts():
  schedule = lambda count: 0.1 * (count + 1)
  for count in (3, np.int64(3), jnp.asarray(3, jnp.int32), np.asarray(3)):
    assert float(lionx.effective_weight_decay(schedule, count)) == (
        pytest.approx(0.4))
  traced = jax.jit(lambda c: lionx.effective_weight_decay(schedule, c))
  assert float(traced(jnp.asarray(3))) == pytest.approx(0.4)


# --- issue 27: hyperparameters that are not Python floats ---

import optax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# Every kind of number holds the same value (tests/kinds.py).
from tests.kinds import KINDS, LR as LR27, PEAK as PEAK27, WD as WD27  # noqa: E402
KINDS27 = KINDS
CONVENTIONS27 = ('paper', 'independent', 'corrected')
# 0-d arrays: under optax.inject_hyperparams the learning rate arrives as
# one (eta_t), so the conventions that need the peak refuse it without one.
ARRAYS27 = ('np 0-d', 'jnp 0-d')


def _decay_steps(kind, convention, *, implicit=False, cautious=False,
                 schedule=False):
  """Three add_decoupled_weight_decay updates with hyperparameters of
  ``kind``; the learning rate is a schedule (with a peak) if asked."""
  to = KINDS27[kind]
  if schedule:
    learning_rate = optax.linear_schedule(LR27, LR27 / 3, 5)
  else:
    learning_rate = to(LR27)
  needs_lr = implicit or convention != 'paper'
  kwargs = {}
  if convention != 'paper' and schedule:
    kwargs['peak_learning_rate'] = to(PEAK27)
  elif convention != 'paper' and kind in ARRAYS27:
    # An array learning rate needs its peak (issue 23): the same number.
    kwargs['peak_learning_rate'] = to(LR27)
  tx = lionx.add_decoupled_weight_decay(
      to(WD27), implicit=implicit,
      learning_rate=learning_rate if needs_lr else None,
      weight_decay_convention=convention, cautious_weight_decay=cautious,
      **kwargs)
  rng = np.random.default_rng(0)
  params = jnp.asarray(rng.uniform(-3, 3, 12), jnp.float32)
  state = tx.init(params)
  out = []
  for _ in range(3):
    u, state = tx.update(jnp.asarray(rng.choice([-1.0, 0.0, 1.0], 12),
                                     jnp.float32), state, params)
    out.append(np.asarray(u))
  return np.stack(out)


@pytest.mark.parametrize('kind', sorted(set(KINDS27) - {'python'}))
@pytest.mark.parametrize('convention', CONVENTIONS27)
@pytest.mark.parametrize('variant', ['explicit', 'implicit', 'cautious',
                                     'schedule'])
def test_decay_is_the_same_for_every_kind_of_number(kind, convention,
                                                    variant):
  """A weight decay, learning rate or peak given as a NumPy scalar or a
  0-d array is the same number as the Python float: the same updates,
  bit for bit, under every convention."""
  if variant == 'schedule' and convention == 'paper':
    pytest.skip('the paper convention takes no peak learning rate')
  kwargs = {'implicit': variant == 'implicit',
            'cautious': variant == 'cautious',
            'schedule': variant == 'schedule'}
  np.testing.assert_array_equal(
      _decay_steps(kind, convention, **kwargs),
      _decay_steps('python', convention, **kwargs))


@pytest.mark.parametrize('kind', sorted(set(KINDS27) - {'python'}))
@pytest.mark.parametrize('convention', CONVENTIONS27)
def test_effective_weight_decay_is_the_same_for_every_kind(kind,
                                                            convention):
  to = KINDS27[kind]

  def lam(to, schedule):
    kwargs = {'weight_decay_convention': convention}
    if convention != 'paper':
      if schedule:
        kwargs['learning_rate'] = optax.linear_schedule(LR27, LR27 / 3, 5)
        kwargs['peak_learning_rate'] = to(PEAK27)
      else:
        kwargs['learning_rate'] = to(LR27)
        if kind in ARRAYS27 and to is not float:
          kwargs['peak_learning_rate'] = to(LR27)
    return np.asarray(lionx.effective_weight_decay(to(WD27), 2, **kwargs))

  for schedule in (False, True):
    got, want = lam(to, schedule), lam(float, schedule)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got, want)
  # And each is the documented lambda': lambda, lambda / peak, or
  # lambda eta_t / peak (eta_t = peak for a number), to float32.
  expected = {'paper': WD27, 'independent': WD27 / LR27,
              'corrected': WD27}[convention]
  np.testing.assert_allclose(lam(to, False), expected, rtol=2 ** -23)


@pytest.mark.parametrize('kind', ARRAYS27)
@pytest.mark.parametrize('convention', ('independent', 'corrected'))
def test_an_array_rate_without_its_peak_is_refused_in_every_kind(
    kind, convention):
  """Where issue 23's rule and issue 27's meet: a 0-d array learning rate
  is refused without the peak (it may be an injected eta_t); with the
  peak it steps as the Python float (above)."""
  with pytest.raises(ValueError, match='^peak_learning_rate=None'):
    lionx.add_decoupled_weight_decay(
        0.1, learning_rate=KINDS27[kind](LR27),
        weight_decay_convention=convention)
