"""The toy reproductions at reduced size: the theory's qualitative claims."""

import math

import numpy as np
import pytest

import lionx
from experiments import lion_k_2d
from experiments import toy_rate

LAM = 0.1


def _grad(theta):
  """Gradient of theta1^2 + theta2^2 + 5 cos theta1 cos theta2."""
  t1, t2 = theta[..., 0], theta[..., 1]
  return np.stack([2 * t1 - 5 * np.sin(t1) * np.cos(t2),
                   2 * t2 - 5 * np.cos(t1) * np.sin(t2)], -1)


@pytest.fixture(scope='module')
def toy():
  return toy_rate.run(n_points=2, n_repeats=2, num_steps=300)


@pytest.mark.slow
def test_toy_constants(toy):
  paper = np.array(sorted(toy_rate.MINIMA_PAPER))
  np.testing.assert_allclose(toy.minimizers, paper, atol=1e-3)
  assert abs(toy.f_star - 1.884) < 5e-4
  assert abs(toy.lipschitz - 7.0) < 0.01
  assert abs(toy.sigma2_empirical - 2.0) < 0.2


def test_toy_iterates_stay_in_the_box(toy):
  """Theorem 2(i): a start in the box (here on it) never leaves."""
  thetas = toy.constrained.thetas
  assert thetas.shape == (4, 300, 2)
  np.testing.assert_array_equal(thetas[:, 0, 0], 10.0)
  assert np.max(np.abs(thetas)) <= (1 / LAM) * (1 + 1e-6)
  assert np.max(toy.constrained.linf_scaled_max) <= 1 + 1e-6


def test_toy_kkt_residual_nonnegative_and_lhs(toy):
  """Theorem 2(i): the residual is >= 0; the LHS is its running average."""
  for rs in (toy.constrained, toy.unconstrained):
    theta = rs.thetas.astype(np.float64)
    g = _grad(theta)
    residual = LAM * np.sum(g * theta, -1) + np.abs(g).sum(-1)
    assert residual.min() >= -1e-4
    k = np.arange(1, theta.shape[1] + 1)
    if rs.name == 'constrained':
      lhs = np.cumsum(residual, 1) / k
    else:
      lhs = np.cumsum(np.abs(g).sum(-1), 1) / (2 * k)
    np.testing.assert_allclose(rs.lhs, lhs, rtol=1e-4)
    gap = toy_rate.f(rs.theta0) - 1.884293
    rhs = 15 * math.sqrt(2) * k ** -0.25 * (2 * 7 * gap[:, None]) ** 0.25
    np.testing.assert_allclose(rs.rhs, rhs, rtol=1e-5)
    np.testing.assert_array_equal(rs.holds, np.all(lhs <= rhs, 1))


def test_toy_report_and_rows(toy):
  rows = toy.constrained.rows()
  assert len(rows) == 4 and rows[0]['setting'] == 'constrained'
  text = toy_rate.report(toy)
  assert 'f* found: 1.884' in text and '| constrained |' in text


@pytest.mark.slow  # a second run of the toy problem (seconds of jit)
def test_toy_paper_schedule():
  res = toy_rate.run(n_points=1, n_repeats=1, num_steps=800,
                     schedule='paper')
  for rs in (res.constrained, res.unconstrained):
    c = math.sqrt(7 * rs.f_gap[0]) / math.sqrt(2)  # sqrt(L gap) / sigma
    c3 = rs.f_gap[0] ** 0.75 / (7 ** 0.25 * 2 ** 0.25)
    np.testing.assert_allclose(rs.b1, 1 - c / math.sqrt(800))
    np.testing.assert_allclose(rs.b2, rs.b1)
    np.testing.assert_allclose(rs.learning_rate,
                               c3 / (math.sqrt(2) * 800 ** 0.75))
    assert np.max(rs.linf_scaled_max) <= 1 + 1e-6
  with pytest.raises(ValueError, match='beta = 1 - c1/sqrt'):
    toy_rate.run(n_points=1, n_repeats=1, num_steps=50, schedule='paper')


@pytest.mark.slow  # a second run of the toy problem (seconds of jit)
def test_toy_main_writes_and_refuses_to_overwrite(tmp_path, capsys):
  args = ['--out', str(tmp_path), '--points', '1', '--repeats', '2',
          '--steps', '100']
  assert toy_rate.main(args) == 0
  for name in ('toy_rate.png', 'toy_rate.md', 'toy_rate.csv',
               'toy_rate.json'):
    assert (tmp_path / name).stat().st_size > 0
  assert 'global minimisers found' in capsys.readouterr().out
  with pytest.raises(FileExistsError, match='--overwrite'):
    toy_rate.main(args)
  assert toy_rate.main(args + ['--overwrite']) == 0


def _tanh_endpoint(lam, beta=4.0):
  """Solves tanh(beta * 2 (x - 1.5)) = -lam x for x in (0, 1.5) by bisection."""
  lo, hi = 0.0, 1.5
  for _ in range(200):
    mid = (lo + hi) / 2
    if math.tanh(beta * 2 * (mid - 1.5)) + lam * mid < 0:
      lo = mid
    else:
      hi = mid
  return min(lo, 1 / lam)


# Hand-derived minimisers of f + K*(lam x)/lam on the x1 axis
# (Table 2 of Chen et al.).
EXPECTED = {
    'sign (Lion)': lambda lam: min(1.5, 1 / lam),
    'l2 (p=2)': lambda lam: min(1.5, 1 / lam),
    'sparse sign (e=0.5)': lambda lam: min(1.5 - 0.5 / 2, 1 / lam),
    'top-1 sign': lambda lam: min(1.5, 1 / lam),
    'huber (e=1)': lambda lam: min(3 / (2 + lam), 1 / lam),
    'tanh (beta=4)': _tanh_endpoint,
}


@pytest.fixture(scope='module')
def trajectories():
  return lion_k_2d.run_trajectories(num_steps=1500)


@pytest.mark.slow
def test_figure1_and_5_endpoints(trajectories):
  """Each run ends at the optimum if it is in the set, else on the boundary."""
  assert {t.reshaper for t in trajectories} == set(EXPECTED)
  for t in trajectories:
    expected = np.array([EXPECTED[t.reshaper](t.weight_decay), 0.0])
    np.testing.assert_allclose(t.expected, expected, atol=1e-4,
                               err_msg=t.reshaper)
    assert t.error < 0.01, (t.reshaper, t.weight_decay, t.endpoint)
    assert t.optimum_inside == (t.weight_decay == 0.5)
    if not t.optimum_inside:
      assert abs(t.constraint_end - 1.0) < 1e-3, t.reshaper
    else:
      assert t.constraint_end < 1.0
  sign = [t for t in trajectories if t.reshaper == 'sign (Lion)']
  np.testing.assert_allclose([t.endpoint for t in sign],
                             [[1.5, 0.0], [2 / 3, 0.0]], atol=0.01)


def test_weight_decay_sweep_threshold():
  sweep = lion_k_2d.run_weight_decay_sweep(
      [0.3, 0.6, 0.65, 0.7, 0.8, 1.2], num_steps=1500)
  assert (sweep.previous, sweep.threshold) == (0.65, 0.7)
  assert sweep.previous < 1 / 1.5 <= sweep.threshold
  np.testing.assert_allclose(sweep.loss, sweep.theory_loss, atol=1e-3)
  np.testing.assert_allclose(sweep.theory_loss[-1], (1.5 - 1 / 1.2) ** 2)


@pytest.mark.slow
def test_phase1_rates():
  results = lion_k_2d.run_phase1(
      {'sign': lionx.sign_reshaper(), 'l2': lionx.lp_reshaper(2)},
      num_steps=200)
  assert [(r.reshaper, r.scheme) for r in results] == [
      ('sign', 'implicit'), ('sign', 'explicit'), ('l2', 'implicit'),
      ('l2', 'explicit')]
  for r in results:
    eps_lam = 0.01 * 1.5
    rate = 1 / (1 + eps_lam) if r.scheme == 'implicit' else 1 - eps_lam
    assert r.rate == pytest.approx(rate)
    assert r.holds
    assert r.dist[:, 0].min() > 0
    t = np.arange(r.dist.shape[1])
    assert np.all(r.dist <= r.dist[:, :1] * rate ** t * (1 + 1e-3) + 1e-6)
    # From (1.45, 0) the gradient pushes outwards: the bound is tight.
    assert 0.999 < r.worst_step_ratio <= 1 + 1e-3


def test_lion_k_2d_main_refuses_to_overwrite(tmp_path):
  (tmp_path / 'phase1.md').write_text('earlier result')
  with pytest.raises(FileExistsError, match='phase1.md'):
    lion_k_2d.main(['--out', str(tmp_path)])
  assert (tmp_path / 'phase1.md').read_text() == 'earlier result'


BAD = [
    (lambda: toy_rate.run(n_points=0), ValueError, 'n_points=0'),
    (lambda: toy_rate.run(num_steps=2.5), TypeError, 'num_steps=2.5'),
    (lambda: toy_rate.run(schedule='cosine'), ValueError,
     "schedule='cosine'"),
    (lambda: toy_rate.run(weight_decay=0.0), ValueError, 'weight_decay=0.0'),
    (lambda: lion_k_2d.run_trajectories(weight_decays=[]), ValueError,
     'weight_decays is empty'),
    (lambda: lion_k_2d.run_trajectories(weight_decays=[-1.0]), ValueError,
     'weight_decays=-1.0'),
    (lambda: lion_k_2d.run_trajectories(num_steps=10, tail=20), ValueError,
     'tail=20'),
    (lambda: lion_k_2d.run_weight_decay_sweep([1.0, 0.5]), ValueError,
     'increasing'),
    (lambda: lion_k_2d.run_phase1(learning_rate=1.0, weight_decay=1.5),
     ValueError, 'learning_rate \\* weight_decay < 1'),
    (lambda: lion_k_2d.run_phase1(starts=[1.0, 2.0]), ValueError,
     'starts has shape'),
    (lambda: lion_k_2d.run_phase1(b1=1.5), ValueError, 'b1=1.5'),
    (lambda: lion_k_2d.run_weight_decay_sweep(b2=-0.1), ValueError,
     'b2=-0.1'),
]


@pytest.mark.parametrize('call,error,text', BAD)
def test_bad_input(call, error, text):
  with pytest.raises(error, match=text):
    call()
