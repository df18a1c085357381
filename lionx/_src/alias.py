"""Ready-made optimizers: each is a plain ``optax.chain``.

The positional order is optax's: ``lion(learning_rate, b1, b2, mu_dtype,
weight_decay, mask)``; ``lion_k`` puts ``reshaper`` second. Every other
option is keyword-only. Each chain runs on the real views of complex leaves
(:func:`lionx._src.realview.real_view_transformation`), so that a complex
leaf's update is its real view's, bit for bit; for real trees that wrapper
does nothing.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax

from lionx._src import checks
from lionx._src.realview import is_complex
from lionx._src.realview import real_view_transformation
from lionx._src.realview import tree_view_as_complex
from lionx._src.realview import tree_view_as_real
from lionx._src.reshapers import Reshaper, sign_reshaper
from lionx._src.transforms import (
    Mask, add_decoupled_weight_decay, cautious, scale_by_lion)

DEFAULT_WEIGHT_DECAY = 1e-3


def _learning_rate(
    learning_rate: optax.ScalarOrSchedule,
) -> optax.GradientTransformation:
  """``optax.scale_by_learning_rate``, with complex leaves as real views.

  Multiplying a complex leaf by a real scalar in complex arithmetic would
  spread a NaN of one part to the other; on the real view it cannot.
  """
  checks.non_negative('learning_rate', learning_rate, schedule=True)
  inner = optax.scale_by_learning_rate(learning_rate)

  def update_fn(updates, state, params=None):
    del params
    if callable(learning_rate):
      count = getattr(state, 'count', None)
      if count is not None:  # checks what the schedule returns.
        checks.scheduled('learning_rate', learning_rate, count)
    out, state = inner.update(tree_view_as_real(updates), state)
    return tree_view_as_complex(out, updates), state

  return optax.GradientTransformation(inner.init, update_fn)


def _complex_refused(
    tx: optax.GradientTransformationExtraArgs, reshaper: Reshaper,
) -> optax.GradientTransformationExtraArgs:
  """``tx``, refusing complex leaves if ``reshaper`` does not take them as
  real views (the chain hands it real views, which it would misread)."""
  if getattr(reshaper, 'real_view', True):
    return tx

  def check(name, tree):
    for leaf in jax.tree.leaves(tree):
      if is_complex(leaf):
        raise TypeError(
            f'{name} has a complex leaf of shape {jnp.shape(leaf)}: the '
            f'reshaper {reshaper.name} refuses complex leaves; use another '
            'reshaper or split the leaf into real parameters.')

  def init_fn(params):
    check('params', params)
    return tx.init(params)

  def update_fn(updates, state, params=None, **extra_args):
    check('updates', updates)
    return tx.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _weight_decay(weight_decay, mask, learning_rate, *, implicit=False,
                  weight_decay_convention='paper', peak_learning_rate=None,
                  cautious_weight_decay=False):
  needs_lr = implicit or weight_decay_convention != 'paper'
  return add_decoupled_weight_decay(
      weight_decay, mask, implicit=implicit,
      learning_rate=learning_rate if needs_lr else None,
      weight_decay_convention=weight_decay_convention,
      peak_learning_rate=peak_learning_rate,
      cautious_weight_decay=cautious_weight_decay)


def lion_k(
    learning_rate: optax.ScalarOrSchedule,
    reshaper: Optional[Reshaper] = None,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Optional[jnp.dtype] = None,
    weight_decay: optax.ScalarOrSchedule = DEFAULT_WEIGHT_DECAY,
    mask: Optional[Mask] = None,
    *,
    implicit: bool = False,
    weight_decay_convention: str = 'paper',
    peak_learning_rate: Optional[float] = None,
    cautious_weight_decay: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Lion-K: Lion with ``sign`` replaced by a reshaper's :math:`\nabla K`.

  .. math::

    c_k &= \beta_1 m_{k-1} + (1-\beta_1) g_k \\
    \theta_{k+1} &= \theta_k - \eta\,(\nabla K(c_k) + \lambda\theta_k) \\
    m_k &= \beta_2 m_{k-1} + (1-\beta_2) g_k

  It minimises :math:`f(\theta) + \frac{1}{\lambda}K^*(\lambda\theta)`; the
  reshaper's ``constraint(params, weight_decay)`` is the quantity kept
  :math:`\le 1`. See :func:`lion` for the choice of ``weight_decay``, the
  weight-decay conventions (where :math:`\lambda` becomes
  :math:`\lambda'`, :func:`lionx.effective_weight_decay`), and complex
  leaves.

  Args:
    learning_rate: :math:`\eta \ge 0`, a scalar or a schedule.
    reshaper: a :class:`Reshaper` such as :func:`lp_reshaper`; ``None``
      means :func:`sign_reshaper`, i.e. plain Lion.
    b1: :math:`\beta_1 \in [0, 1]`.
    b2: :math:`\beta_2 \in [0, 1]`.
    mu_dtype: storage dtype of the momentum.
    weight_decay: :math:`\lambda \ge 0`, a scalar or a schedule.
    mask: which leaves get weight decay (see
      :func:`add_decoupled_weight_decay`).
    implicit: use the implicit weight-decay scheme (15) of Chen et al.
      2023b (arXiv:2310.05898).
    weight_decay_convention: ``'paper'``, ``'independent'`` or
      ``'corrected'`` (see :func:`lion`).
    peak_learning_rate: :math:`\eta_{\text{peak}}` for the conventions
      other than ``'paper'`` when ``learning_rate`` is a schedule or an
      array.
    cautious_weight_decay: decay only the coordinates where the decay
      agrees with the step (see :func:`add_decoupled_weight_decay`; there
      is no box then).

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import lionx
    >>> opt = lionx.lion_k(0.1, lionx.huber_reshaper(1.0))
    >>> params = jnp.array([1.0, -2.0])
    >>> state = opt.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum(p ** 2))(params)
    >>> updates, state = opt.update(grads, state, params)
    >>> optax.apply_updates(params, updates)  # c = 0.1 g is inside the linear zone
    Array([ 0.9799, -1.9598], dtype=float32)
  """
  if reshaper is None:
    reshaper = sign_reshaper()
  if not isinstance(reshaper, Reshaper):
    raise TypeError(
        f'reshaper={reshaper!r}: expected a lionx reshaper such as '
        'lionx.sign_reshaper().')
  return _complex_refused(real_view_transformation(optax.chain(
      scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype),
      reshaper,
      _weight_decay(weight_decay, mask, learning_rate, implicit=implicit,
                    weight_decay_convention=weight_decay_convention,
                    peak_learning_rate=peak_learning_rate,
                    cautious_weight_decay=cautious_weight_decay),
      _learning_rate(learning_rate),
  )), reshaper)


def lion(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Optional[jnp.dtype] = None,
    weight_decay: optax.ScalarOrSchedule = DEFAULT_WEIGHT_DECAY,
    mask: Optional[Mask] = None,
    *,
    weight_decay_convention: str = 'paper',
    peak_learning_rate: Optional[float] = None,
    cautious_weight_decay: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""The Lion optimizer (Algorithm 1 of Dong, Li, Lin).

  .. math::

    c_k &= \beta_1 m_{k-1} + (1-\beta_1) g_k \\
    \theta_{k+1} &= \theta_k - \eta\,(\operatorname{sign}(c_k)
      + \lambda\theta_k) \\
    m_k &= \beta_2 m_{k-1} + (1-\beta_2) g_k

  The positional order is ``optax.lion``'s, ``(learning_rate, b1, b2,
  mu_dtype, weight_decay, mask)``. With the same arguments and float32
  parameters and momentum, the result is ``optax.lion``'s bit for bit
  (except where :math:`|c_k|` is at rounding level, where lionx does not
  step; see :func:`lionx.scale_by_lion`). With bfloat16 parameters or
  ``mu_dtype=jnp.bfloat16`` it is not: lionx computes the momentum in
  float32 and rounds it once to the storage dtype, where optax rounds
  twice, so lionx's momentum is the more accurate one and the two differ
  in the last bit of some entries.

  With :math:`\lambda > 0` and :math:`\eta\lambda \le 1`, Lion solves
  :math:`\min f` subject to the box :math:`\|\theta\|_\infty \le 1/\lambda`:
  an iterate inside the box stays inside, and one outside approaches it by
  the factor :math:`1 - \eta\lambda` per step.

  The default ``weight_decay=1e-3`` equals ``optax.lion``'s, so lionx is a
  drop-in replacement that gives the same numbers (in float32). It
  implies the box :math:`\|\theta\|_\infty \le 1000`, which no usual
  initialisation comes near: the default does not constrain. To use the
  constrained view, set :math:`\lambda` so that :math:`1/\lambda` is the
  weight magnitude you accept, e.g. ``0.1`` (box 10) as in the papers'
  CIFAR runs; with AdamW settings at hand, take a learning rate 3-10x
  smaller and a weight decay 3-10x larger.

  **Weight-decay conventions**, to port a weight decay from another library
  unchanged (``weight_decay_convention``; :math:`\eta_{\text{peak}}` is the
  learning rate when it is a number, else ``peak_learning_rate``):

  * ``'paper'`` (default; optax, PyTorch, google/automl, bitsandbytes):
    the decay step is :math:`\eta_t\lambda\theta`, the box
    :math:`\|\theta\|_\infty \le 1/\lambda`;
  * ``'independent'`` (big_vision; lucidrains' ``decoupled_weight_decay=
    True``): :math:`\lambda(\eta_t/\eta_{\text{peak}})\theta`, the box
    :math:`\eta_{\text{peak}}/\lambda`;
  * ``'corrected'`` (timm's corrected weight decay):
    :math:`\lambda\eta_t^2/\eta_{\text{peak}}\,\theta`, the box
    :math:`\eta_{\text{peak}}/(\lambda\eta_t)`.

  :func:`lionx.effective_weight_decay` gives the :math:`\lambda'` of the box
  :math:`\lambda'\|\theta\|_\infty \le 1` for the metrics. Under
  ``optax.inject_hyperparams`` (or whenever ``learning_rate`` is an
  array), ``'independent'`` and ``'corrected'`` require
  ``peak_learning_rate``: the injected learning rate is :math:`\eta_t`,
  not the peak.
  ``mu_dtype`` is a dtype, which ``optax.inject_hyperparams`` would take
  for a schedule (dtypes are callable): mark it static,
  ``optax.inject_hyperparams(lionx.lion, static_args=('mu_dtype',))``.

  Non-finite gradients make the affected parameters NaN rather than moving
  them by :math:`\pm\eta`; to skip such steps, leaving parameters and
  momentum unchanged, use ``optax.apply_if_finite(lionx.lion(...), k)``.

  A complex leaf is optimized as two real coordinates: its update is, bit
  for bit, the update of its real view ``stack([z.real, z.imag], -1)``, and
  it stays complex (its momentum is stored as the real view). As for every
  optax optimizer, pass the conjugate of JAX's gradient of a real loss,
  ``optax.tree.conj(jax.grad(loss)(params))``: that is the real view's
  gradient. Integer and bool leaves are refused.

  Args:
    learning_rate: :math:`\eta \ge 0`, a scalar or a schedule.
    b1: :math:`\beta_1 \in [0, 1]`.
    b2: :math:`\beta_2 \in [0, 1]`.
    mu_dtype: storage dtype of the momentum, e.g. ``jnp.bfloat16``.
    weight_decay: :math:`\lambda \ge 0`, a scalar or a schedule.
    mask: which leaves get weight decay: a tree of bools (or a callable
      returning one) matching a prefix of the params.
    weight_decay_convention: ``'paper'``, ``'independent'`` or
      ``'corrected'``.
    peak_learning_rate: :math:`\eta_{\text{peak}} > 0`, required by
      ``'independent'`` and ``'corrected'`` when ``learning_rate`` is a
      schedule or an array (as under ``optax.inject_hyperparams``).
    cautious_weight_decay: decay only where
      :math:`\operatorname{sign}(c_k) \odot \theta \ge 0` (Chen et al.
      2025, see :func:`add_decoupled_weight_decay`); Lion then keeps no
      box.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import lionx
    >>> opt = lionx.lion(learning_rate=0.1, weight_decay=0.1)
    >>> params = jnp.array([1.0, -2.0, 3.0])
    >>> state = opt.init(params)
    >>> f = lambda p: jnp.sum(p ** 2)
    >>> for _ in range(3):
    ...   updates, state = opt.update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params
    Array([ 0.67..., -1.64...,  2.61...], dtype=float32)

  References:
    Chen et al., `Symbolic Discovery of Optimization Algorithms
    <https://arxiv.org/abs/2302.06675>`_, 2023.
  """
  return lion_k(learning_rate, sign_reshaper(), b1, b2, mu_dtype,
                weight_decay, mask,
                weight_decay_convention=weight_decay_convention,
                peak_learning_rate=peak_learning_rate,
                cautious_weight_decay=cautious_weight_decay)


def cautious_lion(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.95,
    b2: float = 0.98,
    mu_dtype: Optional[jnp.dtype] = None,
    weight_decay: optax.ScalarOrSchedule = DEFAULT_WEIGHT_DECAY,
    mask: Optional[Mask] = None,
    *,
    reshaper: Optional[Reshaper] = None,
    weight_decay_convention: str = 'paper',
    peak_learning_rate: Optional[float] = None,
    cautious_weight_decay: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Cautious Lion: Lion's step only where it agrees with the gradient.

  With :math:`u = \operatorname{sign}(c_k)` and, per tensor of :math:`n`
  entries, :math:`\phi = \mathbb{1}[u \odot g_k > 0]`:

  .. math::

    \theta_{k+1} = \theta_k - \eta\left(\frac{n}{\sum_i\phi_i + 1}
      (u \odot \phi) + \lambda\theta_k\right)

  The weight decay is not masked. Defaults :math:`(\beta_1, \beta_2) =
  (0.95, 0.98)` are those of the reference implementation; see :func:`lion`
  for ``weight_decay``, the box :math:`1/\lambda` it implies, the
  weight-decay conventions and complex leaves (a complex tensor of
  :math:`m` entries has :math:`n = 2m` real coordinates).

  Args:
    learning_rate: :math:`\eta \ge 0`, a scalar or a schedule.
    b1: :math:`\beta_1 \in [0, 1]`.
    b2: :math:`\beta_2 \in [0, 1]`.
    mu_dtype: storage dtype of the momentum.
    weight_decay: :math:`\lambda \ge 0`, a scalar or a schedule.
    mask: which leaves get weight decay.
    reshaper: :math:`\nabla K` in place of ``sign`` (default: sign).
    weight_decay_convention: ``'paper'``, ``'independent'`` or
      ``'corrected'`` (see :func:`lion`).
    peak_learning_rate: :math:`\eta_{\text{peak}}` for the conventions
      other than ``'paper'`` when ``learning_rate`` is a schedule or an
      array.
    cautious_weight_decay: decay only the coordinates where the decay
      agrees with the step (see :func:`add_decoupled_weight_decay`; there
      is no box then).

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import lionx
    >>> opt = lionx.cautious_lion(0.1, weight_decay=0.0)
    >>> params = jnp.zeros(3)
    >>> updates, _ = opt.update(
    ...     jnp.array([1.0, -1.0, 2.0]), opt.init(params), params)
    >>> updates  # all agree: n / (n + 1) = 0.75
    Array([-0.075,  0.075, -0.075], dtype=float32)

  References:
    Liang, Chen, Liu, Liu, `Cautious Optimizers: Improving Training with One
    Line of Code <https://arxiv.org/abs/2411.16085>`_, 2024.
  """
  if reshaper is None:
    reshaper = sign_reshaper()
  if not isinstance(reshaper, Reshaper):
    raise TypeError(
        f'reshaper={reshaper!r}: expected a lionx reshaper such as '
        'lionx.sign_reshaper().')
  return _complex_refused(real_view_transformation(optax.chain(
      cautious(optax.chain(
          scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype), reshaper)),
      _weight_decay(weight_decay, mask, learning_rate,
                    weight_decay_convention=weight_decay_convention,
                    peak_learning_rate=peak_learning_rate,
                    cautious_weight_decay=cautious_weight_decay),
      _learning_rate(learning_rate),
  )), reshaper)
