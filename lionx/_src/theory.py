r"""The rates of Dong, Li, Lin, *Convergence Rate Analysis of LION* (2024).

Plain NumPy/Python functions (no JAX): the step-size schedule of Theorem 2,
the constants and bounds of Theorem 2, Corollary 3, Theorem 4 and
Corollary 5, the empirical rate constant of Appendix A.1.2 of the journal
version (2025, in Chinese), and AdamW-to-Lion starting points. Theorems,
corollaries and equations are numbered as in the English version.

References:
  Dong, Li, Lin, `Convergence Rate Analysis of LION
  <https://arxiv.org/abs/2411.07724>`_, 2024.

  Dong, Li, Lin, `LION 优化器的收敛速度分析
  <https://doi.org/10.11897/SP.J.1016.2025.02008>`_, Chinese Journal of
  Computers, 2025 (the journal version: the toy problem of Appendix A.1.1
  and the rate constants of A.1.2).

Notation: :math:`d` parameters, :math:`K` steps, :math:`L` the smoothness
constant, :math:`\sigma^2` the gradient-noise variance,
:math:`\Delta = f(\theta_1) - f^*` the initial gap. Every bound accepts
``K`` as a scalar or an array (to draw the bound over :math:`K`). Constants
that are not positive, :math:`K < 1` and :math:`d < 1` raise ``ValueError``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import numpy as np

from lionx._src import checks


KINDS = ('lion', 'sgd')


def _real_array(name: str, value: Any, expected: str) -> np.ndarray:
  """``value`` as a float64 array; ``TypeError`` unless it holds real
  numbers (not bools, not traced: lionx.theory is plain NumPy)."""
  shown = f'{name}={value!r:.80}: expected {expected}'
  if isinstance(value, (bool, np.bool_)) or value is None:
    raise TypeError(f'{shown}.')
  try:
    array = np.asarray(value)
  except Exception as err:  # a traced value, a ragged list, ...
    raise TypeError(f'{shown} (lionx.theory is plain NumPy, not '
                    'traced).') from err
  if not (np.issubdtype(array.dtype, np.integer)
          or np.issubdtype(array.dtype, np.floating)):
    raise TypeError(f'{shown}, got dtype {array.dtype}.')
  return array.astype(np.float64)


def _at_least_one(name: str, value: Any) -> Any:
  """``value`` as a float or float array, every entry finite and ``>= 1``."""
  expected = 'a real number >= 1 (or an array of them)'
  array = _real_array(name, value, expected)
  if array.size == 0:
    raise TypeError(f'{name}={value!r:.80}: expected {expected}, got an '
                    'empty array.')
  if not np.all(np.isfinite(array)) or np.any(array < 1):
    raise ValueError(f'{name}={value!r:.80}: expected {expected}, finite.')
  return float(array) if array.ndim == 0 else array


def _positive(name: str, value: Any) -> float:
  """``value`` as a float, checked ``> 0``."""
  checks.positive(name, value)
  x = checks.concrete_float(value)
  if x is None:
    raise TypeError(f'{name}={value!r}: expected a concrete real number.')
  return x


def _out(value: Any) -> Any:
  """A Python float for a scalar, the array otherwise."""
  return float(value) if np.ndim(value) == 0 else np.asarray(value)


class PaperSchedule(NamedTuple):
  """The hyperparameters of Theorem 2 for a run of ``K`` steps."""

  b1: float  # 1 - c1 / sqrt(K)
  b2: float  # 1 - c2 / sqrt(K)
  learning_rate: float  # c3 / (sqrt(d) K^{3/4})


def paper_schedule(K: Any, d: Any, c1: Any, c2: Any, c3: Any) -> PaperSchedule:
  r"""The schedule of Theorem 2 (Dong et al.) for a run of :math:`K` steps.

  .. math::

    \beta_1 = 1 - \frac{c_1}{\sqrt K}, \qquad
    \beta_2 = 1 - \frac{c_2}{\sqrt K}, \qquad
    \eta = \frac{c_3}{\sqrt d\, K^{3/4}}

  The hyperparameters are constant during the run but depend on its length
  :math:`K`, so the bound of Theorem 2 holds at that :math:`K` only.

  Args:
    K: the number of steps, :math:`\ge 1`; must satisfy :math:`K \ge c_1^2`
      and :math:`K \ge c_2^2` so that :math:`\beta_1, \beta_2 \ge 0`.
    d: the number of parameters, :math:`\ge 1`.
    c1, c2, c3: positive constants (e.g. from :func:`corollary3_constants`).

  Returns:
    A :class:`PaperSchedule` ``(b1, b2, learning_rate)`` of Python floats.

  Example:
    >>> from lionx.theory import paper_schedule
    >>> paper_schedule(K=10_000, d=4, c1=1.0, c2=2.0, c3=5.0)
    PaperSchedule(b1=0.99, b2=0.98, learning_rate=0.0025)
  """
  K = _at_least_one('K', K)
  d = _at_least_one('d', d)
  c1, c2, c3 = (_positive(n, v) for n, v in
                (('c1', c1), ('c2', c2), ('c3', c3)))
  if np.ndim(K) != 0 or np.ndim(d) != 0:
    raise ValueError(f'K={K!r}, d={d!r}: expected scalars.')
  for name, c in (('c1', c1), ('c2', c2)):
    if c > math.sqrt(K):
      raise ValueError(
          f'{name}={c!r} with K={K!r}: beta = 1 - {name}/sqrt(K) would be '
          f'negative; expected K >= {name}**2 = {c * c:g}.')
  root = math.sqrt(K)
  return PaperSchedule(b1=1.0 - c1 / root, b2=1.0 - c2 / root,
                       learning_rate=c3 / (math.sqrt(d) * K ** 0.75))


class Corollary3Constants(NamedTuple):
  """The constants of Corollaries 3 and 5 of Dong et al."""

  c1: float  # sqrt(L Delta) / sigma
  c2: float  # equal to c1
  c3: float  # Delta^{3/4} / (L^{1/4} sigma^{1/2})
  min_steps: float  # max(sigma^6 / (L Delta)^3, L Delta / sigma^2)


def corollary3_constants(L: Any, sigma: Any, f_gap: Any) -> Corollary3Constants:
  r"""The :math:`c_1, c_2, c_3` of Corollary 3 (and 5) of Dong et al.

  .. math::

    c_1 = c_2 = \frac{\sqrt{L\Delta}}{\sigma}, \qquad
    c_3 = \frac{\Delta^{3/4}}{L^{1/4}\sigma^{1/2}}, \qquad
    K \ge \max\Big\{\frac{\sigma^6}{L^3\Delta^3},
      \frac{L\Delta}{\sigma^2}\Big\}

  with :math:`\Delta = f(\theta_1) - f^*`. The second lower bound on
  :math:`K` is also what keeps :math:`\beta_1 = 1 - c_1/\sqrt K \ge 0`.

  Args:
    L: the smoothness constant :math:`L > 0`.
    sigma: the noise level :math:`\sigma > 0` (not :math:`\sigma^2`).
    f_gap: :math:`\Delta = f(\theta_1) - f^* > 0`.

  Returns:
    A :class:`Corollary3Constants` ``(c1, c2, c3, min_steps)``.

  Example:
    >>> from lionx.theory import corollary3_constants
    >>> corollary3_constants(L=2.0, sigma=1.0, f_gap=8.0)
    Corollary3Constants(c1=4.0, c2=4.0, c3=4.0, min_steps=16.0)
  """
  L = _positive('L', L)
  sigma = _positive('sigma', sigma)
  gap = _positive('f_gap', f_gap)
  L, sigma, gap = np.float64(L), np.float64(sigma), np.float64(gap)
  with np.errstate(all='ignore'):
    c = np.sqrt(L * gap) / sigma
    c3 = gap ** 0.75 / (L ** 0.25 * np.sqrt(sigma))
    min_steps = max(sigma ** 6 / (L * gap) ** 3, L * gap / sigma ** 2)
    if not (0 < c < np.inf and 0 < c3 < np.inf and min_steps < np.inf):
      # An intermediate over- or underflowed: recompute in factors that
      # do so only where the result does (then it is inf or 0).
      c = np.sqrt(L) * np.sqrt(gap) / sigma
      c3 = gap ** 0.75 / L ** 0.25 / np.sqrt(sigma)
      # sigma^6 / (L Delta)^3 = c^-6 and L Delta / sigma^2 = c^2.
      min_steps = max((1.0 / c) ** 6 if c > 0 else np.inf, c * c)
  return Corollary3Constants(c1=float(c), c2=float(c), c3=float(c3),
                             min_steps=float(min_steps))


class Theorem2Terms(NamedTuple):
  """The five terms of the right-hand side of Theorem 2(ii), Dong et al."""

  initial_gap: Any  # Delta sqrt(d) / (c3 K^{1/4})
  noise: Any  # 2 sigma sqrt(d) / (c2 K^{1/2})
  smoothness: Any  # 4 L c3 sqrt(d) / (c2 K^{1/4})
  momentum: Any  # 2 sigma (2 c1 + c2) sqrt(d) / (sqrt(c2) K^{1/4})
  step: Any  # 2 L c3 sqrt(d) / K^{3/4}


def theorem2_terms(
    d: Any, K: Any, L: Any, sigma: Any, f_gap: Any,
    c1: Any, c2: Any, c3: Any,
) -> Theorem2Terms:
  r"""The five terms of the bound of Theorem 2(ii), Dong et al., apart.

  .. math::

    \frac{\Delta\sqrt d}{c_3K^{1/4}} + \frac{2\sigma\sqrt d}{c_2K^{1/2}}
    + \frac{4Lc_3\sqrt d}{c_2K^{1/4}}
    + \frac{2\sigma(2c_1+c_2)\sqrt d}{\sqrt{c_2}K^{1/4}}
    + \frac{2Lc_3\sqrt d}{K^{3/4}}

  Args: as :func:`theorem2_bound`.

  Returns:
    A :class:`Theorem2Terms`; each field is a float, or an array shaped like
    ``K``.

  Example:
    >>> from lionx.theory import theorem2_terms
    >>> theorem2_terms(d=4, K=16, L=1, sigma=1, f_gap=1, c1=1, c2=1, c3=1)
    Theorem2Terms(initial_gap=1.0, noise=1.0, smoothness=4.0, momentum=6.0,
                  step=0.5)
  """
  d = _at_least_one('d', d)
  K = _at_least_one('K', K)
  if np.ndim(d) != 0:
    raise ValueError(f'd={d!r}: expected a scalar.')
  L, sigma, gap, c1, c2, c3 = (
      _positive(n, v) for n, v in (
          ('L', L), ('sigma', sigma), ('f_gap', f_gap),
          ('c1', c1), ('c2', c2), ('c3', c3)))
  rd = math.sqrt(d)
  # A term past float64's range is inf (or 0), with no warning.
  with np.errstate(over='ignore', under='ignore'):
    q = np.power(K, 0.25)
    return Theorem2Terms(
        initial_gap=_out(gap * rd / (c3 * q)),
        noise=_out(2 * sigma * rd / (c2 * np.sqrt(K))),
        smoothness=_out(4 * L * c3 * rd / (c2 * q)),
        momentum=_out(2 * sigma * (2 * c1 + c2) * rd
                      / (math.sqrt(c2) * q)),
        step=_out(2 * L * c3 * rd / np.power(K, 0.75)))


def theorem2_bound(
    d: Any, K: Any, L: Any, sigma: Any, f_gap: Any,
    c1: Any, c2: Any, c3: Any,
) -> Any:
  r"""The right-hand side of Theorem 2(ii), Dong et al. (constrained Lion).

  With the schedule of :func:`paper_schedule` and
  :math:`\|\theta_1\|_\infty \le 1/\lambda`,

  .. math::

    \frac1K\sum_{k=1}^K \mathbb E\big[\lambda\langle\nabla f(\theta_k),
      \theta_k\rangle + \|\nabla f(\theta_k)\|_1\big]
    \le \frac{\Delta\sqrt d}{c_3K^{1/4}} + \frac{2\sigma\sqrt d}{c_2K^{1/2}}
    + \frac{4Lc_3\sqrt d}{c_2K^{1/4}}
    + \frac{2\sigma(2c_1+c_2)\sqrt d}{\sqrt{c_2}K^{1/4}}
    + \frac{2Lc_3\sqrt d}{K^{3/4}},

  where :math:`\Delta = f(\theta_1) - f^*` with :math:`f^*` the infimum over
  the box. See :func:`theorem2_terms` for the terms one by one.

  Args:
    d: the number of parameters, :math:`\ge 1`.
    K: the number of steps, :math:`\ge 1` (a scalar or an array).
    L: the smoothness constant, :math:`> 0`.
    sigma: the noise level :math:`\sigma > 0`.
    f_gap: :math:`\Delta > 0`.
    c1, c2, c3: the schedule's constants, :math:`> 0`.

  Returns:
    A float, or an array shaped like ``K``.

  Example:
    >>> from lionx.theory import theorem2_bound
    >>> theorem2_bound(d=4, K=16, L=1, sigma=1, f_gap=1, c1=1, c2=1, c3=1)
    12.5
  """
  return _out(sum(theorem2_terms(d, K, L, sigma, f_gap, c1, c2, c3)))


def theorem4_bound(
    d: Any, K: Any, L: Any, sigma: Any, f_gap: Any,
    c1: Any, c2: Any, c3: Any,
) -> Any:
  r"""The right-hand side of Theorem 4, Dong et al. (unconstrained Lion).

  For coercive :math:`f`, :math:`\lambda \le 1/(2C)` with
  :math:`C \ge \sup_k\|\theta_k\|_\infty` and the schedule of
  :func:`paper_schedule`,

  .. math::

    \frac{1}{2K}\sum_{k=1}^K \mathbb E\|\nabla f(\theta_k)\|_1
    \le (\text{the five terms of Theorem 2}),

  so the value equals :func:`theorem2_bound`; only the left-hand side
  differs.

  Example:
    >>> from lionx.theory import theorem4_bound
    >>> theorem4_bound(d=4, K=16, L=1, sigma=1, f_gap=1, c1=1, c2=1, c3=1)
    12.5
  """
  return theorem2_bound(d, K, L, sigma, f_gap, c1, c2, c3)


def corollary3_bound(d: Any, K: Any, L: Any, sigma: Any, f_gap: Any) -> Any:
  r"""The right-hand side of Corollary 3 of Dong et al.

  With the constants of :func:`corollary3_constants` and
  :math:`K \ge` ``min_steps``,

  .. math::

    \frac1K\sum_{k=1}^K \mathbb E\big[\lambda\langle\nabla f(\theta_k),
      \theta_k\rangle + \|\nabla f(\theta_k)\|_1\big]
    \le 15\sqrt d\,K^{-1/4}\,\big(\sigma^2 L\Delta\big)^{1/4}.

  The exponent is :math:`1/4` as in the English version; the Chinese
  journal version prints a square root there, a typo. The value is
  returned for every :math:`K \ge 1`; the corollary only claims it for
  :math:`K \ge` ``min_steps``.

  Args:
    d: the number of parameters, :math:`\ge 1`.
    K: the number of steps, :math:`\ge 1` (a scalar or an array).
    L: the smoothness constant, :math:`> 0`.
    sigma: the noise level :math:`\sigma > 0`.
    f_gap: :math:`\Delta = f(\theta_1) - f^* > 0`.

  Returns:
    A float, or an array shaped like ``K``.

  Example:
    >>> from lionx.theory import corollary3_bound
    >>> corollary3_bound(d=4, K=16, L=2.0, sigma=1.0, f_gap=8.0)  # 15*2/2*2
    30.0
  """
  d = _at_least_one('d', d)
  K = _at_least_one('K', K)
  if np.ndim(d) != 0:
    raise ValueError(f'd={d!r}: expected a scalar.')
  L = _positive('L', L)
  sigma = _positive('sigma', sigma)
  gap = _positive('f_gap', f_gap)
  # (sigma^2 L Delta)^(1/4) in factors that cannot overflow or underflow
  # where the result does not.
  return _out(15 * math.sqrt(d) * np.power(K, -0.25) * (
      math.sqrt(sigma) * math.sqrt(math.sqrt(L)) * math.sqrt(math.sqrt(gap))))


def corollary5_bound(d: Any, K: Any, L: Any, sigma: Any, f_gap: Any) -> Any:
  r"""The right-hand side of Corollary 5, Dong et al. (unconstrained Lion).

  .. math::

    \frac{1}{2K}\sum_{k=1}^K \mathbb E\|\nabla f(\theta_k)\|_1
    \le 15\sqrt d\,K^{-1/4}\,\big(\sigma^2 L\Delta\big)^{1/4},

  the same value as :func:`corollary3_bound` (note the :math:`1/(2K)` on the
  left).

  Example:
    >>> from lionx.theory import corollary5_bound
    >>> corollary5_bound(d=4, K=16, L=2.0, sigma=1.0, f_gap=8.0)
    30.0
  """
  return corollary3_bound(d, K, L, sigma, f_gap)


def empirical_rate_constant(
    norms: Any, d: Optional[Any] = None, kind: str = 'lion',
) -> float:
  r"""The smallest :math:`c` that makes the observed rate hold at every K.

  The method of Appendix A.1.2 of the journal version. With :math:`A_K`
  the running average of the per-step gradient norms,

  .. math::

    A_K = \frac1K\sum_{k=1}^K n_k, \qquad
    c_{\text{LION}} = \max_K \frac{A_K K^{1/4}}{\sqrt d}, \qquad
    c_{\text{SGD}} = \max_K A_K K^{1/4},

  so that :math:`A_K \le c\sqrt d K^{-1/4}` (Lion, :math:`n_k =
  \|\nabla f(\theta_k)\|_1`) or :math:`A_K \le c K^{-1/4}` (SGD, :math:`n_k =
  \|\nabla f(\theta_k)\|_2`) for every :math:`K`. The paper reports
  :math:`c_{\text{LION}} = 0.701` and :math:`c_{\text{SGD}} = 1.365` for
  ResNet-18 on CIFAR-100.

  Args:
    norms: the per-step norms :math:`n_1, \dots, n_K`, non-negative; a 2-D
      array is read as ``(repeats, K)`` and averaged over the repeats first
      (the expectation, as the paper does over 5 runs).
    d: the number of parameters, :math:`\ge 1`; required for ``'lion'``,
      unused for ``'sgd'``.
    kind: ``'lion'`` (:math:`\ell_1`, :math:`\sqrt d K^{-1/4}`) or ``'sgd'``
      (:math:`\ell_2`, :math:`K^{-1/4}`).

  Returns:
    :math:`c` as a float; NaN if a norm is NaN (a diverged run).

  Example:
    >>> from lionx.theory import empirical_rate_constant
    >>> # A_1 = 4, A_2 = 3: max(4 * 1, 3 * 2 ** 0.25) / sqrt(4)
    >>> empirical_rate_constant([4.0, 2.0], d=4)
    2.0
    >>> round(empirical_rate_constant([4.0, 2.0], kind='sgd'), 4)
    4.0
  """
  checks.one_of('kind', kind, KINDS)
  if kind == 'lion' and d is None:
    raise ValueError("d=None: kind='lion' needs the number of parameters.")
  if d is not None:
    d = _at_least_one('d', d)
    if np.ndim(d) != 0:
      raise ValueError(f'd={d!r}: expected a scalar.')
  values = _real_array('norms', norms, 'an array of real numbers')
  if values.ndim not in (1, 2):
    raise ValueError(
        f'norms has shape {np.shape(norms)}; expected (K,) or (repeats, K).')
  if values.size == 0:
    raise ValueError(f'norms is empty (shape {np.shape(norms)}): expected '
                     'K >= 1 steps and at least one repeat.')
  if values.ndim == 2:
    values = values.mean(axis=0)
  if np.any(np.isnan(values)):
    return math.nan
  if np.any(values < 0):
    raise ValueError(
        f'norms has a negative entry {values.min()!r}; norms are >= 0.')
  k = np.arange(1, values.size + 1, dtype=np.float64)
  scaled = np.cumsum(values) / k * k ** 0.25
  if kind == 'lion':
    scaled = scaled / math.sqrt(d)
  return float(np.max(scaled))


class LionStart(NamedTuple):
  """Lion hyperparameters derived from AdamW ones."""

  learning_rate: float  # AdamW's learning rate / factor.
  weight_decay: float  # AdamW's weight decay * factor.
  box: float  # 1 / weight_decay: the bound Lion keeps on |theta_i|.


def lion_from_adamw(
    learning_rate: Any, weight_decay: Any, factor: Any = 3.0,
) -> LionStart:
  r"""Lion starting points from AdamW hyperparameters.

  The practice of Chen et al. (2023): take a learning rate 3-10x smaller and
  a weight decay 3-10x larger than AdamW's,

  .. math::

    \eta_{\text{Lion}} = \eta_{\text{AdamW}} / \text{factor}, \qquad
    \lambda_{\text{Lion}} = \lambda_{\text{AdamW}} \cdot \text{factor},

  so that the per-step decay :math:`\eta\lambda` stays the same (optax,
  PyTorch and lionx all multiply the decoupled weight decay by the learning
  rate). Lion's sign update has unit size per coordinate, larger than
  Adam's, hence the smaller learning rate.

  The implied box: Lion with weight decay :math:`\lambda` solves
  :math:`\min f` s.t. :math:`\|\theta\|_\infty \le 1/\lambda` (Dong et al.
  §3.1; Chen et al. 2023b),
  so ``box = 1 / weight_decay`` is the largest magnitude any weight can keep.
  Check it against the weights the model needs (e.g. initialisations and
  norm-layer scales of order 1 need :math:`1/\lambda \gg 1`); a factor of 10
  on AdamW's usual 0.1 gives :math:`\lambda = 1`, a box of 1, which binds.
  AdamW's weight decay 0 gives a box of ``inf``.

  Args:
    learning_rate: AdamW's learning rate, :math:`> 0`.
    weight_decay: AdamW's (decoupled) weight decay, :math:`\ge 0`.
    factor: the ratio, :math:`\ge 1`; the usual range is 3 to 10.

  Returns:
    A :class:`LionStart` ``(learning_rate, weight_decay, box)``.

  Example:
    >>> from lionx.theory import lion_from_adamw
    >>> lion_from_adamw(3e-4, 0.01, factor=10)
    LionStart(learning_rate=3e-05, weight_decay=0.1, box=10.0)
  """
  lr = _positive('learning_rate', learning_rate)
  checks.non_negative('weight_decay', weight_decay)
  checks.in_range('factor', factor, 1.0, math.inf, high_open=True)
  wd = float(weight_decay) * float(factor)
  return LionStart(learning_rate=lr / float(factor), weight_decay=wd,
                   box=1.0 / wd if wd > 0 else math.inf)
