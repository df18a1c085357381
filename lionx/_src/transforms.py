"""Lion's momentum, decoupled weight decay and the cautious mask."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lionx._src import checks
from lionx._src import quantized
from lionx._src.interpolation import c_from_new_coefficient
from lionx._src.interpolation import interpolate
from lionx._src.interpolation import momentum_error_linear
from lionx._src.norms import compute_dtype
from lionx._src.realview import on_real_view
from lionx._src.realview import real_dtype
from lionx._src.realview import tree_view_as_complex
from lionx._src.realview import tree_view_as_real
from lionx._src.realview import view_as_real

Mask = Union[Any, Callable[[optax.Params], Any]]

CONVENTIONS = ('paper', 'independent', 'corrected')


class ScaleByLionState(NamedTuple):
  """State of :func:`scale_by_lion`."""

  count: chex.Array  # shape=(), dtype=jnp.int32.
  # The momentum m, shaped like params (a complex leaf: its real view, with
  # a trailing axis of 2), dtype=mu_dtype.
  mu: optax.Updates


def _describe(value: Any) -> str:
  """An array argument in a few words (a tracer's repr is long)."""
  if isinstance(value, jax.core.Tracer):
    return f'<a traced array of dtype {value.dtype}>'
  if np.size(value) <= 4:
    return repr(value)
  return f'<an array of dtype {value.dtype}, shape {np.shape(value)}>'


def check_mu_dtype(mu_dtype: Any) -> Optional[jnp.dtype]:
  """``mu_dtype`` as a dtype (or None); errors name it."""
  if mu_dtype is None:
    return None
  if isinstance(mu_dtype, (jax.Array, jax.core.Tracer)):
    # optax.inject_hyperparams takes every callable, a dtype such as
    # jnp.bfloat16 included, for a schedule and passes its value.
    raise TypeError(
        f'mu_dtype={_describe(mu_dtype)}: expected a dtype, got an array. '
        'optax.inject_hyperparams takes a dtype such as jnp.bfloat16 for a '
        'schedule (it is callable) and passes its value at the step count. '
        'Fix: mark it static, optax.inject_hyperparams(lionx.lion, '
        "static_args=('mu_dtype',))(learning_rate=..., "
        'mu_dtype=jnp.bfloat16).')
  hint = ('a float dtype such as jnp.bfloat16, jnp.int8 (8-bit momentum) '
          'or None. Since lionx 0.2 the positional order is optax\'s: '
          '(learning_rate, b1, b2, mu_dtype, weight_decay, mask).')
  dtype = checks.dtype('mu_dtype', mu_dtype, hint)
  if dtype != jnp.int8 and not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f'mu_dtype={mu_dtype!r}: expected {hint}')
  return dtype


def scale_by_lion(
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Optional[jnp.dtype] = None,
) -> optax.GradientTransformation:
  r"""Lion's momentum, emitting :math:`c_k`, not optax's sign(:math:`c_k`).

  Unlike ``optax.scale_by_lion`` (same name), which emits
  :math:`\operatorname{sign}(c_k)`, this emits the interpolation
  :math:`c_k` itself: lines 4 and 6
  of Algorithm 1 in Dong et al. The sign (or any :math:`\nabla K`) is the
  next transform in the chain, a reshaper such as
  :func:`lionx.sign_reshaper`. Without one, the chain is momentum SGD, not
  Lion (see the example).

  .. math::

    c_k &= \beta_1 m_{k-1} + (1 - \beta_1) g_k \\
    m_k &= \beta_2 m_{k-1} + (1 - \beta_2) g_k

  The arithmetic is done in float32 (or wider) whatever the storage dtype;
  :math:`c_k` comes out in the gradient's dtype and :math:`m_k` in
  ``mu_dtype``. Wherever :math:`c_k` is not finite (an Inf or NaN in the
  gradient or in the momentum) it is emitted as NaN, so that no reshaper can
  turn it into a finite step: a bad gradient shows up as NaN parameters,
  never as a silent :math:`\pm\eta` move. Wrap the optimizer in
  :func:`optax.apply_if_finite` to skip such steps instead.

  **Rounding.** Wherever :math:`|c_k|` is within the bound on its rounding
  error it is emitted as 0 (``lionx._src.interpolation``). So where
  Algorithm 1's :math:`c_k` is exactly 0 (:math:`\beta_1 = 1` at the first
  step, a coordinate with zero momentum and gradient, ...) there is no step,
  and wherever :math:`|c_k|` is above rounding level its sign is Algorithm
  1's, for every :math:`\beta_1, \beta_2 \in [0, 1]`.

  **No copy of the momentum.** Written as above, :math:`m_{k-1}` is read by
  two loops (the one that builds :math:`c_k` into the parameter update, and
  the one that overwrites :math:`m` in place), so XLA copies the whole
  buffer first; ``optax.lion`` compiles to such a copy. Here, when
  :math:`\beta_1, \beta_2` are known numbers and
  :math:`0 \le \beta_1 \le 2\beta_2`, :math:`\beta_2 > 0`, :math:`c_k` is
  taken from the stored *new* momentum, which equals the line above in
  exact arithmetic:

  .. math::

    c_k = \tfrac{\beta_1}{\beta_2}\, m_k
          + \big(1 - \tfrac{\beta_1}{\beta_2}\big) g_k

  so :math:`m_{k-1}` is read once and updated in place. :math:`m_k` is
  bit-for-bit the same. :math:`c_k` then differs from the line above by a
  few :math:`u(|m_{k-1}| + |g_k|)`, :math:`u = 2^{-24}` for float32, and
  the rounding rule above bounds that error from :math:`|m_k|` and
  :math:`|g_k|`, so the signs are still Algorithm 1's above rounding level
  (``tests/test_perf.py`` and ``tests/test_conformance.py`` check this).
  One known exception: with float32 momentum and :math:`\beta_2 = 0.5`,
  XLA:CPU rewrites :math:`0.5 m + 0.5 g` as :math:`0.5(m + g)`, recomputes
  it from the old momentum and copies the buffer again (``tests/test_perf.py``
  marks it as an expected failure).
  With a narrower ``mu_dtype`` (bfloat16) the rounding level is that of
  the storage, :math:`2^{-8}|m_k|`: :math:`c_k` within it is 0 (about 1e-4
  of the coordinates of random data). With a traced :math:`\beta`
  (``optax.inject_hyperparams``), :math:`\beta_2 = 0` or
  :math:`\beta_1 > 2\beta_2` (where rounding would be amplified), the
  first line is used as written.

  **Complex leaves** count as two real coordinates: the momentum of a
  complex leaf of shape ``s`` is stored as its real view, shape
  ``s + (2,)``, in ``mu_dtype`` (default: the dtype of its parts), and
  :math:`c_k` is computed on the real view ``stack([re, im], -1)`` of the
  gradient, as for that real leaf, and returned complex. Integer and bool
  leaves are refused (``optax.lion`` casts its float step back to the
  integer, truncating it).

  Args:
    b1: interpolation weight :math:`\beta_1 \in [0, 1]` of the momentum in
      :math:`c_k`.
    b2: decay rate :math:`\beta_2 \in [0, 1]` of the momentum.
    mu_dtype: storage dtype of the momentum, e.g. ``jnp.bfloat16``; ``None``
      stores it in the parameters' dtype; ``jnp.int8`` gives 8-bit
      blockwise momentum (blocks of 256 entries, each with a float32
      scale; codes of :func:`lionx.quantized.quantize`), the one way to
      ask for it (``lionx.scale_by_lion_8bit`` is deprecated).

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import lionx
    >>> tx = lionx.scale_by_lion(b1=0.9, b2=0.99)
    >>> state = tx.init(jnp.zeros(3))
    >>> c, state = tx.update(jnp.array([1.0, -2.0, 0.0]), state)
    >>> c  # c_k itself, not its sign
    Array([ 0.1, -0.2,  0. ], dtype=float32)
    >>> state.mu
    Array([ 0.01, -0.02,  0.  ], dtype=float32)

    The mistake to avoid: without a reshaper the chain steps by
    :math:`-\eta c_k`, which is momentum SGD:

    >>> g = jnp.array([1.0, -2.0, 0.0])
    >>> sgd_m = optax.chain(lionx.scale_by_lion(),
    ...                     optax.scale_by_learning_rate(0.1))
    >>> sgd_m.update(g, sgd_m.init(g))[0]  # -0.1 c: NOT Lion
    Array([-0.01,  0.02, -0.  ], dtype=float32)
    >>> lion = optax.chain(lionx.scale_by_lion(), lionx.sign_reshaper(),
    ...                    optax.scale_by_learning_rate(0.1))
    >>> lion.update(g, lion.init(g))[0]  # -0.1 sign(c): Lion
    Array([-0.1,  0.1, -0. ], dtype=float32)

  References:
    Chen et al., `Symbolic Discovery of Optimization Algorithms
    <https://arxiv.org/abs/2302.06675>`_, 2023.
    Dong, Li, Lin, `Convergence Rate Analysis of LION`, Algorithm 1.
  """
  checks.in_range('b1', b1, 0.0, 1.0)
  checks.in_range('b2', b2, 0.0, 1.0)
  mu_dtype = check_mu_dtype(mu_dtype)
  if mu_dtype == jnp.int8:
    return quantized.scale_by_lion_8bit(b1, b2)
  from_new = c_from_new_coefficient(b1, b2)

  def init_fn(params):
    checks.inexact_leaves('params', params)
    mu = jax.tree.map(
        lambda p: jnp.zeros(jnp.shape(view_as_real(p)),
                            mu_dtype or real_dtype(jnp.result_type(p))),
        params)
    return ScaleByLionState(count=jnp.zeros([], jnp.int32), mu=mu)

  def real_step(g, m):
    """(c_k in g's dtype, m_k in m's dtype) for real g and m."""
    dtype = compute_dtype(g.dtype)
    g32, m32 = g.astype(dtype), m.astype(dtype)
    m_new = b2 * m32 + (1.0 - b2) * g32
    m_new = m_new.astype(m.dtype)
    if from_new is not None:
      # c from the stored m_k: the old momentum is read once, so XLA
      # updates it in place with no copy (see the docstring). The error
      # bound of m_k is what lets interpolate zero c at rounding level.
      c = interpolate(m_new.astype(dtype), g32, from_new,
                      m_error_linear=momentum_error_linear(b2, dtype, m.dtype))
    else:
      c = interpolate(m32, g32, b1)
    return c.astype(g.dtype), m_new

  def update_fn(updates, state, params=None):
    del params
    checks.inexact_leaves('updates', updates)
    updates = jax.tree.map(jnp.asarray, updates)  # Python numbers as arrays.
    real = tree_view_as_real(updates)
    checks.same_structure('updates', real, state.mu, 'the momentum')
    out = jax.tree.map(real_step, real, state.mu)
    treedef = jax.tree.structure(updates)
    pairs = treedef.flatten_up_to(out)
    c = treedef.unflatten([p[0] for p in pairs])
    mu = treedef.unflatten([p[1] for p in pairs])
    count = optax.safe_increment(state.count)
    return tree_view_as_complex(c, updates), ScaleByLionState(count, mu)

  return optax.GradientTransformation(init_fn, update_fn)


class WeightDecayState(NamedTuple):
  """State of :func:`add_decoupled_weight_decay`."""

  count: chex.Array  # shape=(), dtype=jnp.int32; indexes the schedules.


def check_mask(mask: Mask, params: optax.Params) -> Any:
  """The mask as a tree of Python bools that is a prefix of ``params``.

  Leaves may be Python bools, NumPy bools or 0-d (concrete) JAX bool arrays,
  as ``optax.masked`` accepts.
  """
  tree = mask(params) if callable(mask) else mask
  try:
    jax.tree.map(lambda m, _: m, tree, params)
  except (ValueError, TypeError) as err:
    raise ValueError(
        f'mask has tree structure {jax.tree.structure(tree)}, which is not '
        f'a prefix of the params structure {jax.tree.structure(params)}: '
        f'{err}') from None

  def as_bool(leaf):
    if isinstance(leaf, (bool, np.bool_)):
      return bool(leaf)
    if isinstance(leaf, jax.core.Tracer):
      raise TypeError(
          f'mask has a traced leaf {leaf!r}; expected concrete bools (the '
          'mask decides which leaves are decayed when the step is built).')
    if (isinstance(leaf, (np.ndarray, jax.Array)) and leaf.shape == ()
        and leaf.dtype == np.bool_):
      return bool(leaf)
    raise TypeError(
        f'mask has a leaf {leaf!r}; expected a bool (Python, NumPy, or a '
        '0-d JAX bool array).')

  return jax.tree.map(as_bool, tree)


def _as_float(value: Any) -> Any:
  """A concrete number (Python, NumPy or 0-d array) as a Python float;
  schedules and traced values as they are. Every kind of number then takes
  the same arithmetic, so gives the same steps."""
  x = checks.concrete_float(value, schedule=True)
  return value if x is None else x


def _refuse_array_rate(convention: str, learning_rate: Any,
                       peak_learning_rate: Any) -> None:
  """An array learning rate is eta_t under optax.inject_hyperparams (or
  jit): taken as eta_peak it would move with the schedule. Refused, by
  name, where the convention needs the peak and none is given."""
  checks.one_of('weight_decay_convention', convention, CONVENTIONS)
  if (convention == 'paper' or peak_learning_rate is not None
      or not isinstance(learning_rate,
                        (jax.Array, jax.core.Tracer, np.ndarray))):
    return
  raise ValueError(
      f'peak_learning_rate=None: weight_decay_convention={convention!r} '
      'needs peak_learning_rate= when the learning rate is an array '
      f'(here {_describe(learning_rate)}), as under '
      'optax.inject_hyperparams, which passes the scheduled eta_t: '
      'taken as the peak it would move with the schedule (and divide '
      'by 0 where the schedule reaches 0). Fix: pass the peak, e.g. '
      'optax.inject_hyperparams(lionx.lion)(learning_rate=schedule, '
      f'weight_decay_convention={convention!r}, '
      'peak_learning_rate=1e-3), or give learning_rate as a Python '
      'number.')


def _rate_and_convention(
    convention: str, learning_rate: Any, peak_learning_rate: Any,
) -> tuple[Any, Optional[Callable[[chex.Array], chex.Numeric]]]:
  """The learning rate as a Python float (a schedule or traced value as
  it is) and :func:`_convention`'s factor; an array rate without its peak
  is refused first."""
  _refuse_array_rate(convention, learning_rate, peak_learning_rate)
  if learning_rate is not None:
    learning_rate = _as_float(learning_rate)
  return learning_rate, _convention(convention, learning_rate,
                                    peak_learning_rate)


def _convention(
    convention: str,
    learning_rate: Optional[optax.ScalarOrSchedule],
    peak_learning_rate: Optional[float],
) -> Optional[Callable[[chex.Array], chex.Numeric]]:
  """The factor :math:`\\kappa_t` of :math:`\\lambda' = \\lambda\\kappa_t`.

  ``None`` for ``'paper'`` (:math:`\\kappa = 1`). Validates the arguments,
  naming each.
  """
  checks.one_of('weight_decay_convention', convention, CONVENTIONS)
  if convention == 'paper':
    if peak_learning_rate is not None:
      raise ValueError(
          f'peak_learning_rate={peak_learning_rate!r} is only used with '
          "weight_decay_convention='independent' or 'corrected'; the "
          "default 'paper' convention decays by learning_rate * "
          'weight_decay.')
    return None
  if peak_learning_rate is None:
    if learning_rate is None:
      raise ValueError(
          f'learning_rate=None: weight_decay_convention={convention!r} '
          'needs the learning rate (or peak_learning_rate).')
    if callable(learning_rate):
      raise ValueError(
          f'peak_learning_rate=None: weight_decay_convention={convention!r} '
          'with a learning-rate schedule needs peak_learning_rate=, the '
          'peak learning rate that weight_decay is relative to.')
    checks.positive('learning_rate', learning_rate)
    peak = learning_rate
  else:
    checks.positive('peak_learning_rate', peak_learning_rate)
    peak = peak_learning_rate
  peak = _as_float(peak)
  if convention == 'independent':
    if isinstance(peak, (int, float)):
      inverse = 1.0 / float(peak)
      return lambda count: inverse
    return lambda count: 1.0 / peak
  if learning_rate is None:
    raise ValueError(
        "learning_rate=None: weight_decay_convention='corrected' needs the "
        'learning rate (its schedule), since it decays by '
        'weight_decay * learning_rate**2 / peak_learning_rate.')
  return lambda count: (
      checks.scheduled('learning_rate', learning_rate, count) / peak)


def effective_weight_decay(
    weight_decay: optax.ScalarOrSchedule,
    count: chex.Numeric = 0,
    *,
    weight_decay_convention: str = 'paper',
    learning_rate: Optional[optax.ScalarOrSchedule] = None,
    peak_learning_rate: Optional[float] = None,
) -> jax.Array:
  r"""The effective weight decay :math:`\lambda'` of a convention at a step.

  It is the :math:`\lambda'` of the box
  :math:`\lambda'\|\theta\|_\infty \le 1` that the convention keeps:
  Lion's decoupled weight decay with step :math:`\eta_t\lambda'\theta` keeps
  the box :math:`\|\theta\|_\infty \le 1/\lambda'` (Theorem 2(i) of Dong et
  al., for :math:`\eta_t\lambda' \le 1`). Each convention has its own
  :math:`\lambda'` (:math:`\eta_{\text{peak}}` is ``peak_learning_rate``,
  or the learning rate itself when it is a number):

  .. math::

    \text{'paper'}: \lambda, \qquad
    \text{'independent'}: \lambda/\eta_{\text{peak}}, \qquad
    \text{'corrected'}: \lambda\,\eta_t/\eta_{\text{peak}}.

  Pass it as ``weight_decay`` to :func:`lionx.metrics.box_feasibility`,
  :func:`lionx.metrics.kkt_residual` or a reshaper's ``constraint`` to
  measure the box (or :math:`K^*` domain) of the convention in use. It takes
  the same arguments as :func:`lionx.lion` and is what
  :func:`add_decoupled_weight_decay` adds, :math:`\lambda'\theta`, before the
  learning rate.

  Args:
    weight_decay: :math:`\lambda \ge 0`, a number or a schedule.
    count: the optimizer's step count at which the schedules are read, i.e.
      the number of updates made before the one in question (0 for the
      first): an integer >= 0 (a Python int or an integer array of shape
      (), such as a state's ``count``; may be traced). A float, even 2.0,
      is refused.
    weight_decay_convention: ``'paper'``, ``'independent'`` or
      ``'corrected'``.
    learning_rate: the optimizer's learning rate, a number or a schedule
      (needed by ``'independent'`` without ``peak_learning_rate``, and by
      ``'corrected'``).
    peak_learning_rate: :math:`\eta_{\text{peak}} > 0`; required when the
      learning rate is a schedule or an array and the convention is not
      ``'paper'``.

  Returns:
    :math:`\lambda'` at ``count``, a float32 scalar.

  Example:
    >>> import lionx
    >>> float(lionx.effective_weight_decay(0.1))  # paper: the box 1/0.1
    0.1...
    >>> float(lionx.effective_weight_decay(
    ...     1e-4, weight_decay_convention='independent',
    ...     learning_rate=1e-3))  # box lr / wd = 10
    0.1...
  """
  checks.non_negative('weight_decay', weight_decay, schedule=True)
  checks.step_count('count', count)
  if learning_rate is not None:
    checks.non_negative('learning_rate', learning_rate, schedule=True)
  weight_decay = _as_float(weight_decay)
  learning_rate, kappa = _rate_and_convention(
      weight_decay_convention, learning_rate, peak_learning_rate)
  lam = checks.scheduled('weight_decay', weight_decay, count)
  if kappa is not None:
    lam = lam * kappa(count)
  return jnp.asarray(lam, jnp.float32)


def add_decoupled_weight_decay(
    weight_decay: optax.ScalarOrSchedule = 1e-3,
    mask: Optional[Mask] = None,
    *,
    implicit: bool = False,
    learning_rate: Optional[optax.ScalarOrSchedule] = None,
    weight_decay_convention: str = 'paper',
    peak_learning_rate: Optional[float] = None,
    cautious_weight_decay: bool = False,
) -> optax.GradientTransformation:
  r"""Adds :math:`\lambda'\theta` to the update before the learning rate.

  With the learning rate applied last, the step is the paper's
  :math:`\theta \leftarrow \theta - \eta_t(\nabla K(c) + \lambda'\theta)`,
  and Lion then solves :math:`\min f` subject to
  :math:`\|\theta\|_\infty \le 1/\lambda'`.

  .. math::

    u \leftarrow u + \lambda'\theta
    \qquad\text{or, with ``implicit=True``,}\qquad
    u \leftarrow \frac{u + \lambda'\theta}{1 + \eta_t\lambda'}

  **Conventions** (``weight_decay_convention``), so that a weight decay
  ports exactly from other libraries; :math:`\eta_{\text{peak}}` is the
  learning rate when it is a number, else ``peak_learning_rate``:

  * ``'paper'`` (default): the decay step is :math:`\eta_t\lambda\theta`,
    :math:`\lambda' = \lambda`;
  * ``'independent'``: :math:`\lambda(\eta_t/\eta_{\text{peak}})\theta`,
    :math:`\lambda' = \lambda/\eta_{\text{peak}}`;
  * ``'corrected'``: :math:`\lambda\eta_t^2/\eta_{\text{peak}}\,\theta`,
    :math:`\lambda' = \lambda\eta_t/\eta_{\text{peak}}`;

  and the box is :math:`\|\theta\|_\infty \le 1/\lambda'`.

  ``'paper'`` is optax's, PyTorch's, google/automl's and bitsandbytes';
  ``'independent'`` is big_vision's and lucidrains' lion-pytorch with
  ``decoupled_weight_decay=True``; ``'corrected'`` is timm's corrected
  weight decay. :func:`effective_weight_decay` gives :math:`\lambda'`.

  **Cautious weight decay** (``cautious_weight_decay=True``; Chen et al.
  2025) decays only the coordinates where the decay agrees with the
  update :math:`u` it is added to:

  .. math::

    u \leftarrow u + \lambda'\,\mathbb{1}(u \odot \theta \ge 0)
      \odot \theta .

  It needs no new hyperparameter, but it changes what Lion solves: the
  decay no longer pulls every coordinate towards 0, so the box
  :math:`\|\theta\|_\infty \le 1/\lambda'` is no longer implied
  (:math:`\lambda'\|\theta\|_\infty` can still be measured, but it is
  not a constraint). It does not combine with ``implicit``.

  The implicit form is scheme (15) of Chen et al. 2023b,
  :math:`\theta_{t+1} = \theta_t - \eta(\nabla K - \lambda'\theta_{t+1})`
  solved for :math:`\theta_{t+1}`: the explicit step with
  :math:`\eta' = \eta / (1 + \eta\lambda')`. It needs ``learning_rate``.

  A complex leaf decays as its real view (two real coordinates, bit for
  bit). Integer and bool leaves are refused.

  Args:
    weight_decay: :math:`\lambda \ge 0`, a scalar or a schedule.
    mask: a tree of bools (Python, NumPy or 0-d JAX bool arrays) with the
      structure of (a prefix of) the params, or a callable returning one;
      ``False`` leaves get no decay.
    implicit: use the implicit scheme.
    learning_rate: :math:`\eta`, the same scalar or schedule that the chain
      applies last; used (and required) when ``implicit=True`` or by the
      ``'corrected'`` convention (and by ``'independent'`` for
      :math:`\eta_{\text{peak}}`), ignored otherwise.
    weight_decay_convention: ``'paper'`` (default), ``'independent'`` or
      ``'corrected'``.
    peak_learning_rate: :math:`\eta_{\text{peak}} > 0`, a number; only for
      ``'independent'`` and ``'corrected'``, where it is required when
      ``learning_rate`` is a schedule or an array, as under
      ``optax.inject_hyperparams`` (default: ``learning_rate``).
    cautious_weight_decay: decay only where :math:`u \odot \theta \ge 0`.

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> tx = lionx.add_decoupled_weight_decay(0.5)
    >>> params = jnp.array([2.0, -4.0])
    >>> u, _ = tx.update(jnp.ones(2), tx.init(params), params)
    >>> u
    Array([ 2., -1.], dtype=float32)
    >>> tx = lionx.add_decoupled_weight_decay(
    ...     0.5, learning_rate=0.25, weight_decay_convention='independent')
    >>> u, _ = tx.update(jnp.ones(2), tx.init(params), params)
    >>> u  # 1 + (0.5 / 0.25) theta
    Array([ 5., -7.], dtype=float32)
    >>> tx = lionx.add_decoupled_weight_decay(0.5, cautious_weight_decay=True)
    >>> u, _ = tx.update(jnp.ones(2), tx.init(params), params)
    >>> u  # theta_2 < 0 disagrees with u_2 > 0: not decayed
    Array([2., 1.], dtype=float32)

  References:
    Chen, Li, Liang, Su, Xie, Pierse, Liang, Lao, Liu, `Cautious Weight
    Decay <https://arxiv.org/abs/2510.12402>`_, 2025.
  """
  checks.non_negative('weight_decay', weight_decay, schedule=True)
  if not isinstance(implicit, bool):
    raise TypeError(f'implicit={implicit!r}: expected a bool.')
  if learning_rate is not None:
    checks.non_negative('learning_rate', learning_rate, schedule=True)
  if implicit and learning_rate is None:
    raise ValueError(
        'learning_rate=None: implicit=True needs the learning rate.')
  if not isinstance(cautious_weight_decay, bool):
    raise TypeError(f'cautious_weight_decay={cautious_weight_decay!r}: '
                    'expected a bool.')
  if implicit and cautious_weight_decay:
    raise ValueError(
        'implicit=True with cautious_weight_decay=True: the implicit scheme '
        'solves for the decayed parameters, which the cautious mask would '
        'make depend on themselves; use one or the other.')
  if mask is not None:
    _check_mask_type(mask)
  weight_decay = _as_float(weight_decay)
  learning_rate, kappa = _rate_and_convention(
      weight_decay_convention, learning_rate, peak_learning_rate)

  def init_fn(params):
    checks.inexact_leaves('params', params)
    if mask is not None:
      check_mask(mask, params)
    return WeightDecayState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
          'params=None: add_decoupled_weight_decay needs the params.')
    checks.inexact_leaves('updates', updates)
    checks.same_structure('updates', updates, params, 'params')
    checks.inexact_leaves('params', params)
    updates, params = jax.tree.map(jnp.asarray, (updates, params))
    lam = checks.scheduled('weight_decay', weight_decay, state.count)
    if kappa is not None:
      lam = lam * kappa(state.count)
    scale = None
    if implicit:
      eta = checks.scheduled('learning_rate', learning_rate, state.count)
      scale = 1.0 / (1.0 + eta * lam)

    @on_real_view
    def decay(u, p):
      dtype = compute_dtype(u.dtype)
      u32, p32 = u.astype(dtype), p.astype(dtype)
      if cautious_weight_decay:
        # Signs, not the product u theta, which can underflow to -0.
        p32 = jnp.where(jnp.sign(u32) * jnp.sign(p32) >= 0, p32, 0.0)
      out = u32 + lam * p32
      if scale is not None:
        out = out * scale
      return out.astype(u.dtype)

    updates = jax.tree.map(decay, updates, params)
    return updates, WeightDecayState(count=optax.safe_increment(state.count))

  tx = optax.GradientTransformation(init_fn, update_fn)
  if mask is None:
    return tx
  masked = optax.masked(tx, lambda params: check_mask(mask, params))
  return optax.GradientTransformation(masked.init, masked.update)


def _check_mask_type(mask: Any) -> None:
  """Refuses a number, string or dtype given as the mask (e.g. by order),
  and a callable that cannot be called as ``mask(params)``."""
  if isinstance(mask, (str, bytes, int, float, complex, np.number, type,
                       np.dtype)) and not isinstance(mask, (bool, np.bool_)):
    raise TypeError(
        f'mask={mask!r}: expected a tree of bools or a callable returning '
        "one. Since lionx 0.2 the positional order is optax's: "
        '(learning_rate, b1, b2, mu_dtype, weight_decay, mask).')
  if callable(mask) and not isinstance(mask, (np.ndarray, jax.Array)):
    bad = checks.one_argument(mask)
    if bad is not None:
      raise TypeError(f'mask={mask!r}: expected a tree of bools or a '
                      f'callable mask(params), got {bad}.')


class CautiousState(NamedTuple):
  """State of :func:`cautious`: the wrapped transformation's state."""

  inner_state: optax.OptState


def cautious(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformation:
  r"""Keeps only the coordinates where ``inner``'s step agrees with ``g``.

  With :math:`u` the output of ``inner`` and :math:`g` the incoming gradient
  (both in the descent-sign convention, where the step is :math:`-\eta u`),
  per tensor of :math:`n` entries:

  .. math::

    \phi = \mathbb{1}[u \odot g > 0], \qquad
    u \leftarrow \frac{n}{\sum_i \phi_i + 1}\, (u \odot \phi)

  Put weight decay after this transform, so that it is not masked. A
  complex tensor counts as its real view: :math:`n` real and imaginary
  parts, each kept or dropped on its own.

  Args:
    inner: the transformation whose output is masked, e.g.
      ``optax.chain(lionx.scale_by_lion(), lionx.sign_reshaper())``.

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> tx = lionx.cautious(lionx.sign_reshaper())
    >>> u, _ = tx.update(jnp.array([3.0, -1.0, 0.0]), tx.init(jnp.zeros(3)))
    >>> u  # n / (sum(phi) + 1) = 3 / 3
    Array([ 1., -1.,  0.], dtype=float32)

  References:
    Liang, Chen, Liu, Liu, `Cautious Optimizers: Improving Training with One
    Line of Code <https://arxiv.org/abs/2411.16085>`_, 2024.
  """
  if not isinstance(inner, optax.GradientTransformation):
    raise TypeError(
        f'inner={inner!r}: expected an optax.GradientTransformation.')
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return CautiousState(inner_state=inner.init(params))

  def update_fn(grads, state, params=None, **extra_args):
    updates, inner_state = inner.update(
        grads, state.inner_state, params, **extra_args)
    checks.same_structure('updates', updates, grads, 'the gradients')
    checks.inexact_leaves('updates', updates)
    checks.inexact_leaves('grads', grads)
    updates, grads = jax.tree.map(jnp.asarray, (updates, grads))

    @on_real_view
    def mask(u, g):
      dtype = compute_dtype(u.dtype)
      u32 = u.astype(dtype)
      # Signs, not the product u g, which can underflow to 0 where u and g
      # are tiny and agree (and would change the rescale of every entry).
      agree = jnp.sign(u32) * jnp.sign(g.astype(dtype))
      rescale = u.size / (jnp.sum(agree > 0, dtype=dtype) + 1.0)
      # Written with <= so that NaN (which fails every comparison) stays NaN.
      return (jnp.where(agree <= 0, 0.0, u32) * rescale).astype(u.dtype)

    return jax.tree.map(mask, updates, grads), CautiousState(inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
