r"""Reshapers: the :math:`\nabla K` of Lion-K, each knowing its constraint.

Lion-K (Chen, Liu, Liang, Liu, `Lion Secretly Solves Constrained
Optimization, as Lyapunov Predicts <https://arxiv.org/abs/2310.05898>`_,
2023; "Chen et al. 2023b" below) replaces ``sign`` with a subgradient
:math:`\nabla K` of a convex :math:`K` and then solves

.. math::

  \min_\theta f(\theta) + \tfrac{1}{\lambda} K^*(\lambda\theta),

where :math:`K^*` is the convex conjugate. Each reshaper here is an
:class:`optax.GradientTransformation` applying :math:`\nabla K` leaf-wise or
over the whole tree, and also carries

* ``k(x)``: :math:`K` of a pytree;
* ``conjugate(y)``: :math:`K^*` of a pytree (``inf`` outside its domain);
* ``gauge(y)``: the gauge of :math:`\operatorname{dom} K^*`, so
  :math:`y \in \operatorname{dom} K^* \Leftrightarrow` ``gauge(y) <= 1``;
* ``constraint(params, weight_decay)``: ``gauge(weight_decay * params)``,
  the quantity Lion-K keeps :math:`\le 1` (e.g. :math:`\|\lambda\theta\|_\infty`
  for sign, :math:`\|\lambda\theta\|_q` for :math:`\ell_p`).

Every function accumulates in float32 or wider. A NaN entering
:math:`\nabla K` leaves as NaN, never as a finite step; for the reshapers
that normalise over a scope (``lp``), a NaN or ``inf`` anywhere in the
scope makes the whole scope NaN.

**Parameters** (``p``, ``threshold``, ``k``, ``fraction``, ``e``, ``beta``)
must be Python or NumPy numbers: they fix the compiled program, so a traced
value is refused with an error naming it. Build one reshaper per value to
sweep them.

**Complex leaves** count as their real and imaginary parts: every reshaper
computes on the real view ``stack([z.real, z.imag], -1)`` of a complex leaf
and returns the complex leaf rebuilt from it, so its output, ``k``,
``conjugate``, ``gauge`` and ``constraint`` are those of the real view (for
``lp`` and ``topk_sign`` the parts are ranked and normed as separate
coordinates). Integer and bool leaves are refused.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lionx._src import checks
from lionx._src.norms import f32 as _f32
from lionx._src.norms import leaves as _leaves
from lionx._src.norms import lp as _lp
from lionx._src.norms import scale_pow2 as _scale_pow2
from lionx._src.norms import scaled as _scaled
from lionx._src.norms import tree_l1
from lionx._src.norms import tree_linf
from lionx._src.norms import tree_lp as _tree_lp
from lionx._src.norms import tree_max as _max
from lionx._src.norms import tree_sum as _sum
from lionx._src.realview import tree_view_as_complex
from lionx._src.realview import tree_view_as_real

PyTree = Any
Scalar = jax.Array
SCOPES = ('global', 'leaf')


class Reshaper(optax.GradientTransformation):
  r"""An :class:`optax.GradientTransformation` applying :math:`\nabla K`.

  Besides ``init`` and ``update`` it has the attributes ``name``,
  ``grad_k`` (:math:`\nabla K` of a pytree), ``k(x)`` (:math:`K`),
  ``conjugate(y)`` (:math:`K^*`, ``inf`` outside its domain), ``gauge(y)``
  (the gauge of :math:`\operatorname{dom} K^*`) and
  ``constraint(params, weight_decay)`` (``gauge(weight_decay * params)``,
  the quantity Lion-K keeps :math:`\le 1`); the diagnostics use them to
  measure feasibility for any :math:`K`.
  """

  name: str
  grad_k: Callable[[PyTree], PyTree]
  k: Callable[[PyTree], Scalar]
  conjugate: Callable[[PyTree], Scalar]
  gauge: Callable[[PyTree], Scalar]
  # Whether complex leaves count as their real views (else they are refused).
  real_view: bool

  def constraint(self, params: PyTree, weight_decay: Any) -> Scalar:
    r"""``gauge(weight_decay * params)``: feasible iff :math:`\le 1`.

    ``weight_decay`` is the effective :math:`\lambda' \ge 0` (may be
    traced) of the weight-decay convention in use,
    :func:`lionx.effective_weight_decay` (:math:`\lambda` itself under the
    default ``'paper'`` convention).
    """
    checks.numeric_leaves('params', params)
    checks.non_negative('weight_decay', weight_decay)
    lam = _f32(weight_decay)
    return self.gauge(jax.tree.map(lambda p: lam * _f32(p), params))


def _box(tree: PyTree) -> Scalar:
  return tree_linf(tree)


def _indicator(gauge: Callable[[PyTree], Scalar], tol: float):
  """K* that is 0 on {gauge <= 1 + tol}, +inf elsewhere, NaN for NaN."""
  def conjugate(y: PyTree) -> Scalar:
    g = gauge(y)
    return jnp.where(jnp.isnan(g), jnp.nan,
                     jnp.where(g <= 1.0 + tol, 0.0, jnp.inf))
  return conjugate


def _with_penalty(
    gauge: Callable[[PyTree], Scalar],
    penalty: Callable[[PyTree], Scalar],
    tol: float,
):
  """K* that is ``penalty`` on {gauge <= 1 + tol}, +inf elsewhere, NaN for
  NaN."""
  def conjugate(y: PyTree) -> Scalar:
    g = gauge(y)
    return jnp.where(jnp.isnan(g), jnp.nan,
                     jnp.where(g <= 1.0 + tol, penalty(y), jnp.inf))
  return conjugate


def make_reshaper(
    name: str,
    grad_k: Callable[[PyTree], PyTree],
    k: Callable[[PyTree], Scalar],
    conjugate: Callable[[PyTree], Scalar],
    gauge: Callable[[PyTree], Scalar],
    *,
    real_view: bool = True,
) -> Reshaper:
  """Wraps ∇K into a stateless transform that keeps each leaf's dtype.

  With ``real_view`` every function sees complex leaves as their real
  views; without it, they see the leaves as they are (a reshaper that
  cannot treat a complex leaf as two real coordinates refuses it).
  """

  def on_real(fn, arg):
    def wrapped(tree):
      checks.numeric_leaves(arg, tree)
      return fn(tree_view_as_real(tree) if real_view else tree)
    return wrapped

  def grad_k_any(tree):
    tree = jax.tree.map(jnp.asarray, tree)  # Python numbers as arrays.
    real = tree_view_as_real(tree) if real_view else tree
    out = grad_k(real)
    out = jax.tree.map(lambda o, r: o.astype(r.dtype), out, real)
    return tree_view_as_complex(out, tree) if real_view else out

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    checks.inexact_leaves('updates', updates)
    return grad_k_any(updates), state

  tx = Reshaper(init_fn, update_fn)
  tx.name = name
  tx.grad_k = grad_k_any
  tx.k = on_real(k, 'x')
  tx.conjugate = on_real(conjugate, 'y')
  tx.gauge = on_real(gauge, 'y')
  tx.real_view = real_view
  return tx


def _leafwise(fn: Callable[[jax.Array], jax.Array]):
  return lambda tree: jax.tree.map(lambda x: fn(_f32(x)), tree)


_TOL = 1e-6  # slack for float rounding when testing membership of dom K*.


def sign_reshaper() -> Reshaper:
  r"""Plain Lion: :math:`\nabla K(x) = \operatorname{sign}(x)`.

  :math:`K(x) = \|x\|_1`, :math:`K^* = \iota\{\|y\|_\infty \le 1\}`: Lion
  keeps :math:`\|\lambda\theta\|_\infty \le 1` (Chen et al. 2023b, Table 2,
  row 1).

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> r = lionx.sign_reshaper()
    >>> r.update(jnp.array([-2.0, 0.0, 0.3]), r.init(None))[0]
    Array([-1.,  0.,  1.], dtype=float32)
    >>> float(r.constraint(jnp.array([4.0, -8.0]), 0.1))  # λ‖θ‖∞
    0.8...
  """
  return make_reshaper('sign', _leafwise(jnp.sign), tree_l1,
               _indicator(_box, _TOL), _box)


def lp_reshaper(p: float, scope: str = 'global') -> Reshaper:
  r"""Lion-:math:`\ell_p`: the normalised gradient of :math:`\|x\|_p`.

  .. math::

    \nabla K(x) = \frac{\operatorname{sign}(x)\,|x|^{p-1}}{\|x\|_p^{p-1}},
    \qquad \nabla K(0) = 0,

  which solves :math:`\min f` s.t. :math:`\|\lambda\theta\|_q \le 1` with
  :math:`1/p + 1/q = 1` (Chen et al. 2023b, Table 2, row 2). ``p = 1`` is
  plain Lion.

  ``scope='global'`` (the default) takes the norm over the whole pytree, the
  theory's single :math:`d`-vector, so the constraint and the Lyapunov
  function of the paper hold as written and the diagnostics measure the same
  :math:`\|\lambda\theta\|_q`. ``scope='leaf'`` normalises each leaf on its
  own: :math:`K = \sum_l \|x_l\|_p`, which solves the product constraint
  :math:`\max_l \|\lambda\theta_l\|_q \le 1`; each leaf then gets a step of
  unit :math:`\ell_q`-dual size whatever the size of the model.

  A NaN or ``inf`` anywhere in a scope makes that whole scope NaN: the norm
  that scales every other coordinate is meaningless then. The norm is
  taken after an exact power-of-two scaling, so :math:`\nabla K` is right
  for entries up to the float32 maximum.

  Args:
    p: the norm's exponent, a finite real :math:`\ge 1`, a Python or NumPy
      number.
    scope: ``'global'`` or ``'leaf'``.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> r = lionx.lp_reshaper(2)
    >>> r.update(jnp.array([3.0, -4.0]), r.init(None))[0]
    Array([ 0.6, -0.8], dtype=float32)
  """
  checks.in_range('p', p, 1.0, math.inf, high_open=True)
  p = checks.concrete_number('p', p)
  checks.one_of('scope', scope, SCOPES)
  q = math.inf if p == 1.0 else p / (p - 1.0)

  def unit(xs: list[jax.Array]) -> list[jax.Array]:
    """∇K of one scope: NaN throughout if it holds a NaN or an inf."""
    ys, _ = _scaled(xs)  # exact: x / 2^e, so no reciprocal can flush.
    # Over the largest magnitude, whose term is then 1: for a large p the
    # powers of the others underflow, never the norm (1 <= norm <= n^(1/p)).
    top = _max([jnp.max(jnp.abs(y), initial=0.0) for y in ys])
    top = jnp.where((top > 0) & jnp.isfinite(top), top, 1.0)
    rel = [jnp.abs(y) / top for y in ys]
    norm = _sum([jnp.sum(r ** p) for r in rel]) ** (1.0 / p)
    safe = jnp.where(norm > 0, norm, 1.0)  # norm = 0: every entry is 0.
    bad = ~jnp.isfinite(norm)
    return [jnp.where(bad, jnp.nan, jnp.sign(y) * (r / safe) ** (p - 1.0))
            for y, r in zip(ys, rel)]

  if scope == 'global':
    def grad_k(tree):
      leaves, treedef = jax.tree.flatten(tree)
      return treedef.unflatten(unit([_f32(x) for x in leaves]))

    def k(tree):
      return _tree_lp(tree, p)

    def gauge(tree):
      return _tree_lp(tree, q)
  else:
    def grad_k(tree):
      return jax.tree.map(lambda x: unit([_f32(x)])[0], tree)

    def k(tree):
      return _sum([_lp(x, p) for x in _leaves(tree)])

    def gauge(tree):
      return _max([_lp(x, q) for x in _leaves(tree)])

  return make_reshaper(f'lp(p={p:g}, {scope})', grad_k, k,
               _indicator(gauge, _TOL), gauge)


def sparse_sign_reshaper(threshold: float) -> Reshaper:
  r"""Sign with a dead zone: :math:`\operatorname{sign}(x)\mathbb{1}(|x|>e)`.

  :math:`K(x) = \sum_i \max(|x_i| - e, 0)`, whose conjugate is
  :math:`e\|y\|_1` on the box, so Lion-K solves
  :math:`\min f + e\|\theta\|_1` s.t. :math:`\|\lambda\theta\|_\infty \le 1`
  (Chen et al. 2023b, Table 2, row 3).

  Args:
    threshold: the dead zone :math:`e > 0`, in the units of :math:`c`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> r = lionx.sparse_sign_reshaper(0.5)
    >>> r.update(jnp.array([-2.0, 0.4, 0.6]), r.init(None))[0]
    Array([-1.,  0.,  1.], dtype=float32)
  """
  checks.positive('threshold', threshold)
  e = checks.concrete_number('threshold', threshold)

  def grad_k(tree):
    # Written with <= so that NaN (which fails every comparison) stays NaN.
    return _leafwise(lambda x: jnp.where(jnp.abs(x) <= e, 0.0, jnp.sign(x)))(
        tree)

  def k(tree):
    return _sum([jnp.sum(jnp.maximum(jnp.abs(x) - e, 0.0))
                 for x in _leaves(tree)])

  return make_reshaper(f'sparse_sign(e={e:g})', grad_k, k,
               _with_penalty(_box, lambda y: e * tree_l1(y), _TOL), _box)


def _topk_leaf(x: jax.Array, k: int) -> jax.Array:
  """sign(x) on exactly the k largest |x| (ties: lowest index), else 0."""
  flat = x.reshape(-1)
  _, idx = jax.lax.top_k(jnp.where(jnp.isnan(flat), jnp.inf, jnp.abs(flat)), k)
  out = jnp.zeros_like(flat).at[idx].set(jnp.sign(flat[idx]))
  return jnp.where(jnp.isnan(flat), jnp.nan, out).reshape(x.shape)


def _topk_sum(x: jax.Array, k: int) -> Scalar:
  return jnp.sum(jax.lax.top_k(jnp.abs(x.reshape(-1)), k)[0])


def topk_sign_reshaper(
    k: Optional[int] = None,
    *,
    fraction: Optional[float] = None,
    scope: str = 'leaf',
) -> Reshaper:
  r"""Sign on the :math:`k` largest magnitudes only, zero elsewhere.

  :math:`K(x) = \sum_{i \le k} |x_{(i)}|` (sum of the :math:`k` largest
  magnitudes), whose conjugate is the indicator of
  :math:`\{\|y\|_\infty \le 1, \|y\|_1 \le k\}`: Lion-K solves
  :math:`\min f` s.t. :math:`\|\lambda\theta\|_\infty \le 1` and
  :math:`\|\lambda\theta\|_1 \le k` (Chen et al. 2023b, Table 2, row 4).
  The gauge is
  :math:`\max(\|y\|_\infty, \|y\|_1 / k)`.

  ``scope='leaf'`` (the default) keeps the top :math:`k` of each leaf, the
  usual per-layer sparsification, and costs one ``top_k`` per leaf;
  ``scope='global'`` ranks all :math:`d` coordinates together, the theory's
  vector, at the cost of concatenating the tree. Ties are broken towards the
  lower index, so exactly :math:`k` entries are non-zero (fewer if some are
  zero).

  Args:
    k: how many coordinates move, per leaf or in all (capped at the size).
    fraction: instead of ``k``, the fraction in :math:`(0, 1]` that moves;
      :math:`k = \lceil \text{fraction} \cdot n \rceil`.
    scope: ``'leaf'`` or ``'global'``.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> r = lionx.topk_sign_reshaper(2)
    >>> r.update(jnp.array([-3.0, 0.1, 2.0, -0.5]), r.init(None))[0]
    Array([-1.,  0.,  1.,  0.], dtype=float32)
  """
  if (k is None) == (fraction is None):
    raise ValueError(
        f'k={k!r}, fraction={fraction!r}: give exactly one of them.')
  if k is not None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
      raise TypeError(
          f'k={k!r}: expected a positive Python or NumPy int (it fixes '
          'the compiled program, so it cannot be traced).')
    if k <= 0:
      raise ValueError(f'k={k!r}: expected a positive int.')
    k = int(k)
  else:
    checks.in_range('fraction', fraction, 0.0, 1.0, low_open=True)
    fraction = checks.concrete_number('fraction', fraction)
  checks.one_of('scope', scope, SCOPES)

  def count(n: int) -> int:
    if k is not None:
      return int(min(k, n))
    return int(max(1, min(n, math.ceil(fraction * n))))

  def flat(tree) -> jax.Array:
    leaves = _leaves(tree)
    if not leaves:
      return jnp.zeros([0], jnp.float32)
    return jnp.concatenate([x.reshape(-1) for x in leaves])

  def topk_gauge(x: jax.Array, kk: int) -> Scalar:
    (y,), e = _scaled([x])  # so that the sum cannot overflow.
    a = jnp.abs(y)
    return _scale_pow2(
        jnp.maximum(jnp.max(a, initial=0.0), jnp.sum(a) / max(kk, 1)), e)

  if scope == 'leaf':
    def grad_k(tree):
      return jax.tree.map(
          lambda x: _topk_leaf(_f32(x), count(x.size)) if x.size else _f32(x),
          tree)

    def k_fn(tree):
      return _sum([_topk_sum(x, count(x.size)) for x in _leaves(tree) if x.size])

    def gauge(tree):
      return _max([topk_gauge(x, count(x.size)) for x in _leaves(tree)])
  else:
    def grad_k(tree):
      leaves, treedef = jax.tree.flatten(tree)
      v = flat(tree)
      if v.size == 0:
        return tree
      out = _topk_leaf(v, count(v.size))
      splits = np.cumsum([x.size for x in leaves])[:-1]
      parts = jnp.split(out, splits)
      return treedef.unflatten(
          [o.reshape(jnp.shape(x)) for o, x in zip(parts, leaves)])

    def k_fn(tree):
      v = flat(tree)
      return _topk_sum(v, count(v.size)) if v.size else jnp.zeros([])

    def gauge(tree):
      v = flat(tree)
      return topk_gauge(v, count(v.size))

  label = f'k={k}' if k is not None else f'fraction={fraction:g}'
  return make_reshaper(f'topk_sign({label}, {scope})', grad_k, k_fn,
               _indicator(gauge, _TOL), gauge)


def huber_reshaper(e: float) -> Reshaper:
  r"""Clipped linear: :math:`\nabla K(x) = \operatorname{clip}(x, -e, e)/e`.

  :math:`K = \sum_i \operatorname{huber}_e(x_i)` with
  :math:`\operatorname{huber}_e(x) = x^2/(2e)` for :math:`|x| \le e` and
  :math:`|x| - e/2` beyond, whose conjugate is :math:`(e/2)\|y\|_2^2` on the
  box: Lion-K solves :math:`\min f + (e/2)\lambda\|\theta\|_2^2` s.t.
  :math:`\|\lambda\theta\|_\infty \le 1` (Chen et al. 2023b, Table 2, row 5).

  Args:
    e: the width :math:`e > 0` of the linear zone, in the units of :math:`c`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> r = lionx.huber_reshaper(2.0)
    >>> r.update(jnp.array([-5.0, 1.0, 3.0]), r.init(None))[0]
    Array([-1. ,  0.5,  1. ], dtype=float32)
  """
  checks.positive('e', e)
  e = checks.concrete_number('e', e)

  def huber(x):
    a = jnp.abs(x)
    return jnp.where(a <= e, 0.5 * x * x / e, a - 0.5 * e)

  def k(tree):
    return _sum([jnp.sum(huber(x)) for x in _leaves(tree)])

  def penalty(tree):
    return _sum([0.5 * e * jnp.sum(x * x) for x in _leaves(tree)])

  return make_reshaper(f'huber(e={e:g})', _leafwise(lambda x: jnp.clip(x, -e, e) / e),
               k, _with_penalty(_box, penalty, _TOL), _box)


def tanh_reshaper(beta: float) -> Reshaper:
  r"""Smooth sign: :math:`\nabla K(x) = \tanh(\beta x)`.

  :math:`K(x) = \sum_i \log\cosh(\beta x_i)/\beta`, whose conjugate is
  :math:`\sum_i \frac{1}{\beta}\left(y_i \operatorname{artanh} y_i +
  \tfrac12\log(1 - y_i^2)\right)` on the open box :math:`|y_i| < 1`: Lion-K
  keeps :math:`\|\lambda\theta\|_\infty < 1`. Large :math:`\beta` tends to
  plain Lion.

  Args:
    beta: the sharpness :math:`\beta > 0`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> r = lionx.tanh_reshaper(1.0)
    >>> r.update(jnp.array([0.0, 100.0]), r.init(None))[0]
    Array([0., 1.], dtype=float32)
  """
  checks.positive('beta', beta)
  beta = checks.concrete_number('beta', beta)

  def logcosh_over_beta(x):
    # |x| + (log(1 + e^{-2|bx|}) - log 2) / b: no overflow of b x.
    tail = jnp.log1p(jnp.exp(-2.0 * jnp.abs(beta * x))) - jnp.log(2.0)
    return jnp.abs(x) + tail / beta

  def k(tree):
    return _sum([jnp.sum(logcosh_over_beta(x)) for x in _leaves(tree)])

  def conjugate(tree):
    def entry(y):
      inside = jnp.abs(y) < 1.0
      ys = jnp.where(inside, y, 0.0)
      value = (ys * jnp.arctanh(ys) + 0.5 * jnp.log1p(-ys * ys)) / beta
      return jnp.where(jnp.isnan(y), jnp.nan,
                       jnp.where(inside, value, jnp.inf))
    return _sum([jnp.sum(entry(y)) for y in _leaves(tree)])

  return make_reshaper(f'tanh(beta={beta:g})', _leafwise(lambda x: jnp.tanh(beta * x)),
               k, conjugate, _box)


RESHAPERS: dict[str, Callable[..., Reshaper]] = {
    'sign': sign_reshaper,
    'lp': lp_reshaper,
    'sparse_sign': sparse_sign_reshaper,
    'topk_sign': topk_sign_reshaper,
    'huber': huber_reshaper,
    'tanh': tanh_reshaper,
}
