r"""Diagnostics of Lion's theory as pure functions of pytrees.

Every function here is jit-compatible, computes in float32 (or wider) even
for bfloat16 leaves, ignores ``None`` leaves and never loops in Python over
elements (only over leaves). The conventions for degenerate input are the
same everywhere:

* an empty tree has :math:`d = 0`; norms, residuals and fractions are 0;
* a NaN anywhere in an input makes the result NaN (never a silent number);
* an all-zero gradient has the norm ratio 0 (see :func:`grad_norm_ratio`);
* a complex entry counts as two real coordinates (its real and imaginary
  parts), as in the optimizers: :func:`tree_size` counts 2, ``tree_l1`` of
  ``3 - 4j`` is 7;
* norms are exact up to the float32 maximum (see :mod:`lionx._src.norms`).

Under a weight-decay convention other than the default ``'paper'``, pass
the effective :math:`\lambda'` (:func:`lionx.effective_weight_decay`) as
``weight_decay``, so that the box is the convention's.

References:
  Dong, Li, Lin, `Convergence Rate Analysis of LION
  <https://arxiv.org/abs/2411.07724>`_, 2024 ("Dong et al. 2024").

  Chen, Liu, Liang, Liu, `Lion Secretly Solves Constrained Optimization, as
  Lyapunov Predicts <https://arxiv.org/abs/2310.05898>`_, 2023 ("Chen et
  al. 2023b").
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lionx._src import checks
from lionx._src.norms import f32 as _f32
from lionx._src.norms import leaves as _leaves
from lionx._src.norms import scaled as _scaled
from lionx._src.norms import tree_l1
from lionx._src.norms import tree_linf
from lionx._src.norms import tree_lp as _tree_lp
from lionx._src.norms import tree_sum as _sum
from lionx._src.realview import is_complex
from lionx._src.reshapers import Reshaper

PyTree = Any
Scalar = jax.Array



def tree_size(tree: PyTree) -> int:
  r"""The number of coordinates :math:`d` of a pytree, a static Python int.

  ``None`` leaves count 0; an empty tree has :math:`d = 0`; a complex entry
  counts 2 (its real and imaginary parts). Abstract leaves
  (``jax.ShapeDtypeStruct``, as ``jax.eval_shape`` or ``nnx.eval_shape``
  give them) count by their shape, so a model's :math:`d` needs no memory.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from lionx.metrics import tree_size
    >>> tree_size({'w': jnp.ones((3, 2)), 'b': jnp.ones(2), 'none': None})
    8
    >>> tree_size(jax.ShapeDtypeStruct((4, 5), jnp.complex64))
    40
  """
  def count(x) -> int:
    dtype = (x.dtype if isinstance(x, jax.ShapeDtypeStruct)
             else checks.leaf_dtype(x))
    return int(np.prod(np.shape(x), dtype=np.int64)) * (
        2 if jnp.issubdtype(dtype, jnp.complexfloating) else 1)

  checks.numeric_leaves('tree', jax.tree.map(  # an abstract leaf: its dtype
      lambda x: np.zeros((), x.dtype)
      if isinstance(x, jax.ShapeDtypeStruct) else x, tree))
  return sum(count(x) for x in jax.tree.leaves(tree))


def tree_l2(tree: PyTree) -> Scalar:
  r""":math:`\|x\|_2 = (\sum_i x_i^2)^{1/2}` over all leaves.

  The entries are scaled by a power of two near their largest magnitude
  first (exactly, with no reciprocal that could flush to zero), so the sum
  of squares cannot overflow: ``tree_l2([1e38, 1e38])`` is ``1.414e38``,
  and the result is ``inf`` only when the norm exceeds the float32
  maximum. An ``inf`` entry gives ``inf``, a NaN gives NaN.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx.metrics import tree_l2
    >>> tree_l2({'a': jnp.array([3.0]), 'b': jnp.array([-4.0], jnp.bfloat16)})
    Array(5., dtype=float32)
  """
  return _tree_lp(tree, 2.0)


def _count(values: list[jax.Array]) -> Scalar:
  """Sum of per-leaf counts, in float32."""
  return _sum([jnp.sum(v, dtype=jnp.float32) for v in values])


def _any_nan(*trees: PyTree) -> Scalar:
  flags = [jnp.any(jnp.isnan(x)) for t in trees for x in _leaves(t)]
  return jnp.any(jnp.stack(flags)) if flags else jnp.zeros([], bool)


def _fraction(count: Scalar, d: int, nan: Scalar) -> Scalar:
  """``count / d``; 0 when ``d == 0``; NaN when ``nan``."""
  frac = count / d if d else jnp.zeros([], jnp.float32)
  return jnp.where(nan, jnp.nan, frac)


class NormRatio(NamedTuple):
  """The gradient norm ratio (8) of Dong et al. 2024, normalised."""

  ratio: Scalar  # shape=(), float32; r = ||g||_1 / ||g||_2 in [1, sqrt(d)].
  ratio_over_sqrt_d: Scalar  # shape=(), float32; r / sqrt(d) in (0, 1].
  sqrt_d: Scalar  # shape=(), float32; sqrt(d).


def grad_norm_ratio(grads: PyTree) -> NormRatio:
  r"""The gradient norm ratio :math:`r = \|g\|_1 / \|g\|_2` (Dong et al.).

  .. math::

    r = \frac{\|g\|_1}{\|g\|_2} \in [1, \sqrt d], \qquad
    \frac{r}{\sqrt d} \in [1/\sqrt d, 1]

  Dong, Li, Lin argue that :math:`r = \Theta(\sqrt d)` in real networks,
  which makes Lion's :math:`\ell_1` rate (Corollary 3) match SGD's
  :math:`\ell_2` rate. :math:`r` is computed from :math:`g/2^e`, the
  power of two :math:`2^e` just above :math:`\|g\|_\infty` (an exact
  scaling), so it neither overflows nor underflows for any finite
  :math:`g`. A complex entry counts as two real coordinates.

  Degenerate input: for :math:`g = 0` (and for an empty tree) the ratio is
  undefined and both ``ratio`` and ``ratio_over_sqrt_d`` are **0**, a value
  outside :math:`[1, \sqrt d]` that cannot be mistaken for a measurement; a
  NaN or ``inf`` in :math:`g` gives NaN.

  Args:
    grads: a pytree of gradients.

  Returns:
    A :class:`NormRatio` ``(ratio, ratio_over_sqrt_d, sqrt_d)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx.metrics import grad_norm_ratio
    >>> grad_norm_ratio(jnp.array([3.0, -4.0, 0.0, 0.0]))  # 7 / 5, / 2
    NormRatio(ratio=Array(1.4, dtype=float32),
              ratio_over_sqrt_d=Array(0.7, dtype=float32),
              sqrt_d=Array(2., dtype=float32))
  """
  checks.numeric_leaves('grads', grads)
  d = tree_size(grads)
  scaled, _ = _scaled(_leaves(grads))  # exactly g / 2^e, max |.| in [1/2, 1).
  l1 = _sum([jnp.sum(jnp.abs(x)) for x in scaled])
  l2 = jnp.sqrt(_sum([jnp.sum(x * x) for x in scaled]))
  ratio = jnp.where(l2 == 0, 0.0, l1 / jnp.where(l2 == 0, 1.0, l2))
  sqrt_d = jnp.asarray(math.sqrt(d), jnp.float32)
  over = ratio / sqrt_d if d else jnp.zeros([], jnp.float32)
  return NormRatio(ratio=ratio, ratio_over_sqrt_d=over, sqrt_d=sqrt_d)


class BoxFeasibility(NamedTuple):
  """How far the parameters are from Lion's constraint set."""

  linf_scaled: Scalar  # shape=(), float32; lambda ||theta||_inf (or gauge).
  max_violation: Scalar  # shape=(), float32; max(linf_scaled - 1, 0).
  fraction_at_bound: Scalar  # shape=(), float32; share with lam|th| >= 1-tol.


def box_feasibility(
    params: PyTree,
    weight_decay: Any,
    *,
    tol: float = 1e-3,
    reshaper: Optional[Reshaper] = None,
) -> BoxFeasibility:
  r"""Feasibility for the box :math:`\|\theta\|_\infty \le 1/\lambda`.

  Lion with weight decay :math:`\lambda` solves :math:`\min f` subject to
  :math:`\|\lambda\theta\|_\infty \le 1` (Dong et al. 2024 §3.1; Chen et
  al. 2023b (5)); Lion-K keeps
  :math:`\lambda\theta \in \operatorname{dom} K^*` (Chen et al. 2023b (4)).
  This returns

  .. math::

    s = \lambda\|\theta\|_\infty \ \ (\text{or } \texttt{reshaper.constraint}
      (\theta, \lambda),\ \text{e.g. } \|\lambda\theta\|_q \text{ for }
      \ell_p), \qquad
    \max(s - 1, 0), \qquad
    \frac{1}{d}\#\{i : \lambda|\theta_i| \ge 1 - \mathrm{tol}\}.

  The parameters are feasible iff :math:`s \le 1`. The last field counts
  coordinates on the faces of the **box** whatever the reshaper: it is the
  share of weights Lion has pushed to :math:`\pm 1/\lambda`. For sets that
  are not boxes (:math:`\ell_p`, top-k) the set's own boundary is
  :math:`s \ge 1 - \mathrm{tol}`.

  With :math:`\lambda = 0` nothing is constrained: all fields are 0. An empty
  tree gives 0s; a NaN parameter gives NaN in every field.

  Args:
    params: the parameters :math:`\theta`.
    weight_decay: :math:`\lambda \ge 0` (may be traced): the effective
      :math:`\lambda'` of the weight-decay convention in use,
      ``lionx.effective_weight_decay(...)``, which is :math:`\lambda`
      itself under the default ``'paper'`` convention (box
      :math:`\eta_{\text{peak}}/\lambda` under ``'independent'``, for
      instance).
    tol: relative tolerance in :math:`[0, 1)` for "at the bound".
    reshaper: a :class:`lionx.Reshaper` whose ``constraint`` replaces
      :math:`\lambda\|\theta\|_\infty`; ``None`` means the box (plain Lion).

  Returns:
    A :class:`BoxFeasibility`.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx.metrics import box_feasibility
    >>> box_feasibility(jnp.array([10.0, -4.0, 12.0, 1.0]), 0.1)
    BoxFeasibility(linf_scaled=Array(1.2, dtype=float32),
                   max_violation=Array(0.2, dtype=float32),
                   fraction_at_bound=Array(0.5, dtype=float32))
  """
  checks.numeric_leaves('params', params)
  checks.non_negative('weight_decay', weight_decay)
  checks.in_range('tol', tol, 0.0, 1.0, high_open=True)
  if reshaper is not None and not isinstance(reshaper, Reshaper):
    raise TypeError(
        f'reshaper={reshaper!r}: expected a lionx reshaper such as '
        'lionx.lp_reshaper(2), or None for the box.')
  lam = _f32(weight_decay)
  if reshaper is None:
    scaled = lam * tree_linf(params)
  else:
    scaled = _f32(reshaper.constraint(params, lam))
  nan = _any_nan(params) | jnp.isnan(lam)
  scaled = jnp.where(nan, jnp.nan, scaled)
  violation = jnp.maximum(scaled - 1.0, 0.0)
  at_bound = _count([lam * jnp.abs(x) >= 1.0 - tol for x in _leaves(params)])
  fraction = _fraction(at_bound, tree_size(params), nan)
  return BoxFeasibility(linf_scaled=scaled, max_violation=violation,
                        fraction_at_bound=fraction)


def _vdot(a: PyTree, b: PyTree) -> Scalar:
  return _sum([jnp.sum(x * y) for x, y in zip(_leaves(a), _leaves(b))])


def kkt_residual(params: PyTree, grads: PyTree, weight_decay: Any) -> Scalar:
  r"""The KKT residual of the box problem (Dong et al. 2024, Lemma 1).

  .. math::

    R(\theta) = \lambda\langle\nabla f(\theta), \theta\rangle
      + \|\nabla f(\theta)\|_1

  :math:`\theta` is a KKT point of :math:`\min f` s.t.
  :math:`\|\theta\|_\infty \le 1/\lambda` iff it is feasible and
  :math:`R = 0`. For feasible :math:`\theta`, :math:`R \ge 0` (Hölder), so
  :math:`R` measures stationarity; Corollary 3 bounds its average by
  :math:`15\sqrt d K^{-1/4}(\sigma^2 L \Delta)^{1/4}`. Outside the box it can
  be negative. With :math:`\lambda = 0` it is :math:`\|\nabla f\|_1`, the
  quantity of Corollary 5. An empty tree gives 0; NaN gives NaN.

  Args:
    params: :math:`\theta`.
    grads: :math:`\nabla f(\theta)` (exact, or a full-batch estimate), with
      the structure and shapes of ``params``.
    weight_decay: :math:`\lambda \ge 0` (may be traced); under another
      weight-decay convention than ``'paper'``, its effective
      :math:`\lambda'` (``lionx.effective_weight_decay``).

  Returns:
    A float32 scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx.metrics import kkt_residual
    >>> theta, g = jnp.array([10.0, 3.0]), jnp.array([-2.0, 1.0])
    >>> kkt_residual(theta, g, 0.1)  # 0.1 (-20 + 3) + 3
    Array(1.3, dtype=float32)
  """
  checks.numeric_leaves('params', params)
  checks.numeric_leaves('grads', grads)
  checks.non_negative('weight_decay', weight_decay)
  checks.same_structure('grads', grads, params, 'params')
  return _f32(weight_decay) * _vdot(grads, params) + tree_l1(grads)


def _scalar_f32(name: str, value: Any) -> Scalar:
  """A real scalar (NaN and inf included; may be traced) as float32+."""
  dtype = checks.leaf_dtype(value)
  if dtype is None or dtype == np.bool_ or jnp.issubdtype(
      dtype, jnp.complexfloating):
    raise TypeError(f'{name}={value!r:.80}: expected a real scalar.')
  if jnp.ndim(value) != 0:
    raise ValueError(
        f'{name} has shape {jnp.shape(value)}; expected a scalar.')
  return _f32(value)


def lyapunov(
    f_value: Any,
    params: PyTree,
    momentum: PyTree,
    *,
    reshaper: Reshaper,
    weight_decay: Any,
    learning_rate: Any,
    b1: Any,
    b2: Any,
    implicit: bool = False,
) -> Scalar:
  r"""The Lyapunov function :math:`H(x, m)` of Lion-K (Chen et al. 2023b).

  Theorem 4.1 of Chen et al. 2023b writes Lion-K with the momentum of the
  opposite sign, :math:`m^{\text{paper}} = -m`, where :math:`m` is lionx's
  momentum (``ScaleByLionState.mu``,
  :math:`m_k = \beta_2 m_{k-1} + (1-\beta_2)g_k`). With :math:`x = \theta`
  and :math:`m^{\text{paper}} = -m`:

  .. math::

    H(x, m) = f(x) + \frac{1}{\lambda}K^*(\lambda x)
      + \frac{\epsilon\,\beta_1}{\epsilon\lambda(1-\beta_1) + (1-\beta_2)}
        \big(K^*(\lambda x) + K(-m) + \lambda x^\top m\big)

  (:math:`K(-m) = K(m)` for every lionx reshaper). It is :math:`+\infty`
  outside :math:`\lambda x \in \operatorname{dom} K^*` (e.g. outside the box
  for Lion, where :math:`K^* = 0` inside), and the bracket is :math:`\ge 0`
  by Fenchel-Young, so :math:`H \ge f + K^*(\lambda x)/\lambda`. Along the
  iterates one step satisfies

  .. math::

    H_{t+1} - H_t \le -\epsilon\Delta_t
      + \frac{L\epsilon^2}{2}\|\nabla K(c_t) + \lambda x_{t+1}\|_2^2
      = -\epsilon\Delta_t + \frac{L}{2}\|x_{t+1} - x_t\|_2^2,
    \qquad \Delta_t \ge 0,

  when :math:`f` is :math:`L`-smooth and :math:`\beta_2 > \beta_1`.

  **The factor** :math:`\epsilon` **in the coefficient is not in the
  statement of Theorem 4.1 as printed** (which reads
  :math:`\beta_1/(\epsilon\lambda(1-\beta_1) + (1-\beta_2))`). Without it
  :math:`H` is not Lyapunov: starting from :math:`m = 0` the bracket grows
  by about :math:`\beta_1\|\nabla f\|_1` per step while :math:`f` falls by
  only :math:`\epsilon\|\nabla f\|_1`. With it, the coefficient is the
  discrete form of the continuous-time one of (6),
  :math:`(1-\epsilon\gamma)/(\gamma(1+\epsilon\lambda))` with
  :math:`1-\beta = \epsilon\gamma`, and the one-step inequality holds in
  ``tests/test_metrics.py`` for sign, :math:`\ell_2`, Huber and tanh, both
  schemes, while the printed coefficient violates it at the first steps.

  Theorem 4.1 is stated for the implicit scheme (15) with step
  :math:`\epsilon`, i.e. ``lionx.lion_k(epsilon, ..., implicit=True)``. The
  explicit scheme (lionx's default) with learning rate :math:`\eta` is the
  same algorithm with :math:`\epsilon = \eta/(1 - \eta\lambda)`; that is the
  :math:`\epsilon` used when ``implicit=False``. Pair ``params`` and
  ``momentum`` as they sit in the optimizer state at the same time (the
  momentum before the step that uses the gradient at ``params``).

  Args:
    f_value: :math:`f(x)`, a scalar.
    params: :math:`x = \theta`.
    momentum: lionx's momentum :math:`m`, shaped like ``params``.
    reshaper: the :class:`lionx.Reshaper` that defines :math:`K` and
      :math:`K^*`.
    weight_decay: :math:`\lambda > 0` (the theorem needs it).
    learning_rate: the learning rate passed to lionx (may be traced).
    b1: :math:`\beta_1 \in [0, 1]`.
    b2: :math:`\beta_2 \in [0, 1)`.
    implicit: whether the optimizer used ``implicit=True``.

  Returns:
    A float32 scalar, ``inf`` when infeasible, NaN when an input is NaN.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> from lionx.metrics import lyapunov
    >>> x, m = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.5])
    >>> # f + 0 + 0.1 * 0.9 / (0.1 * 0.1 * 0.1 + 0.01) * (|m|_1 + 0.1 x.m)
    >>> lyapunov(3.0, x, m, reshaper=lionx.sign_reshaper(), weight_decay=0.1,
    ...          learning_rate=0.1, b1=0.9, b2=0.99, implicit=True)
    Array(10.7727..., dtype=float32)
  """
  if not isinstance(reshaper, Reshaper):
    raise TypeError(
        f'reshaper={reshaper!r}: expected a lionx reshaper such as '
        'lionx.sign_reshaper().')
  checks.positive('weight_decay', weight_decay)
  checks.positive('learning_rate', learning_rate)
  checks.in_range('b1', b1, 0.0, 1.0)
  checks.in_range('b2', b2, 0.0, 1.0, high_open=True)
  if not isinstance(implicit, bool):
    raise TypeError(f'implicit={implicit!r}: expected a bool.')
  checks.numeric_leaves('params', params)
  checks.numeric_leaves('momentum', momentum)
  checks.same_structure('momentum', momentum, params, 'params')
  lam = checks.concrete_float(weight_decay)
  eta = checks.concrete_float(learning_rate)
  if not implicit and lam is not None and eta is not None and eta * lam >= 1:
    raise ValueError(
        f'learning_rate={learning_rate!r}, weight_decay={weight_decay!r}: '
        'the explicit scheme needs learning_rate * weight_decay < 1.')
  f_value = _scalar_f32('f_value', f_value)
  lam, eps, b1, b2 = (_f32(v) for v in (weight_decay, learning_rate, b1, b2))
  if not implicit:
    eps = eps / (1.0 - eps * lam)
  # eps * (Theorem 4.1's printed coefficient): see the docstring.
  coef = eps * b1 / (eps * lam * (1.0 - b1) + (1.0 - b2))
  lam_x = jax.tree.map(lambda p: lam * _f32(p), params)
  conj = _f32(reshaper.conjugate(lam_x))
  k_m = _f32(reshaper.k(jax.tree.map(lambda v: -_f32(v), momentum)))
  coupling = conj + k_m + _vdot(lam_x, momentum)
  h = f_value + conj / lam + coef * coupling
  nan = _any_nan(params, momentum) | jnp.isnan(f_value)
  return jnp.where(nan, jnp.nan, h)


class UpdateStats(NamedTuple):
  """Per-step statistics of a Lion update."""

  sign_agreement: Scalar  # shape=(), float32; share with sign(c) == sign(g).
  zero_sign_fraction: Scalar  # shape=(), float32; share with sign(c) == 0.
  update_l2: Scalar  # shape=(), float32; ||update||_2.


def update_stats(
    direction: PyTree,
    grads: PyTree,
    updates: Optional[PyTree] = None,
) -> UpdateStats:
  r"""Statistics of one Lion step that a training loop logs every step.

  With :math:`c_k = \beta_1 m_{k-1} + (1-\beta_1) g_k` (the output of
  :func:`lionx.scale_by_lion`, line 4 of Algorithm 1 in Dong et al. 2024) and
  :math:`d` coordinates:

  .. math::

    \text{sign\_agreement} = \frac1d\#\{i: \operatorname{sign} c_i =
      \operatorname{sign} g_i\}, \quad
    \text{zero\_sign\_fraction} = \frac1d\#\{i: c_i = 0\}, \quad
    \|u\|_2

  Signs are compared in :math:`\{-1, 0, 1\}`, so a coordinate where both are
  0 agrees. ``update_l2`` is the norm of ``updates`` (e.g. what
  ``opt.update`` returned, :math:`-\eta(\nabla K(c) + \lambda\theta)`); when
  ``updates`` is ``None`` it is the norm of Lion's unscaled step
  :math:`\|\operatorname{sign}(c)\|_2 = \sqrt{\#\{c_i \ne 0\}}`.

  An empty tree gives 0 in every field. A NaN in ``direction`` or ``grads``
  makes both fractions NaN (and the norm, if it is computed from them).

  Args:
    direction: :math:`c_k`, the interpolation fed to the reshaper.
    grads: :math:`g_k`, shaped like ``direction``.
    updates: optional update tree whose norm is reported.

  Returns:
    An :class:`UpdateStats`.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx.metrics import update_stats
    >>> update_stats(jnp.array([0.5, -1.0, 0.0, 2.0]),
    ...              jnp.array([1.0, 1.0, 0.0, 3.0]))
    UpdateStats(sign_agreement=Array(0.75, dtype=float32),
                zero_sign_fraction=Array(0.25, dtype=float32),
                update_l2=Array(1.7320508, dtype=float32))
  """
  checks.numeric_leaves('direction', direction)
  checks.numeric_leaves('grads', grads)
  checks.numeric_leaves('updates', updates)
  checks.same_structure('grads', grads, direction, 'direction')
  d = tree_size(direction)
  c, g = _leaves(direction), _leaves(grads)
  nan = _any_nan(direction, grads)
  agree = _count([jnp.sign(a) == jnp.sign(b) for a, b in zip(c, g)])
  zeros = _count([a == 0 for a in c])
  if updates is None:
    norm = tree_l2([jnp.sign(a) for a in c])
  else:
    norm = tree_l2(updates)
  return UpdateStats(
      sign_agreement=_fraction(agree, d, nan),
      zero_sign_fraction=_fraction(zeros, d, nan),
      update_l2=norm)

