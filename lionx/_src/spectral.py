r"""The spectral reshaper: Lion-K with the nuclear norm (Muon as Lion-K).

For a matrix :math:`X`, :math:`K(X) = \|X\|_*` (the sum of its singular
values) has :math:`\nabla K(C) = UV^\top`, the polar factor of
:math:`C = U\Sigma V^\top`, and :math:`K^*` is the indicator of the
spectral-norm ball :math:`\{\|Y\|_2 \le 1\}`. Lion-K with this reshaper is
Muon's update with Lion's momentum, and keeps :math:`\sigma_{\max}
(\lambda\theta) \le 1` per matrix by the argument that gives the box for
sign: with :math:`\eta\lambda \le 1`,

.. math::

  \|\lambda\theta_{k+1}\|_2 \le (1 - \eta\lambda)\|\lambda\theta_k\|_2
    + \eta\lambda\|UV^\top\|_2 = (1 - \eta\lambda)\|\lambda\theta_k\|_2
    + \eta\lambda .

References: Chen, Liu, Liang, Liu, `Lion Secretly Solves Constrained
Optimization, as Lyapunov Predicts <https://arxiv.org/abs/2310.05898>`_,
2023 (Lion-K); `Muon is Lion-K with the nuclear norm
<https://arxiv.org/abs/2506.15054>`_, 2025; Jordan et al., `Muon
<https://kellerjordan.github.io/posts/muon/>`_, 2024 (the quintic).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from lionx._src import checks
from lionx._src.norms import f32 as _f32
from lionx._src.norms import leaves as _leaves
from lionx._src.norms import tree_max as _max
from lionx._src.norms import tree_sum as _sum
from lionx._src.realview import is_complex
from lionx._src.reshapers import RESHAPERS
from lionx._src.reshapers import Reshaper
from lionx._src.reshapers import make_reshaper

METHODS = ('newton_schulz', 'quintic')
DEFAULT_STEPS = {'newton_schulz': 20, 'quintic': 5}
MAX_STEPS = 2 ** 31 - 1  # the loop counter is an int32.
# Muon's quintic iteration (Jordan et al. 2024): fast, not convergent.
QUINTIC = (3.4445, -4.7750, 2.0315)
_TOL = 1e-5  # slack for float rounding when testing membership of dom K*.
_HIGHEST = jax.lax.Precision.HIGHEST


def as_matrix(x: jax.Array) -> Optional[jax.Array]:
  """A leaf as the matrix the reshaper orthogonalises, or None (sign).

  Matrices are themselves; a leaf of rank 3 or more (a convolution kernel,
  ``(h, w, c_in, c_out)`` in Flax) is reshaped to fan-in x fan-out,
  ``(h * w * c_in, c_out)``; vectors and scalars have no polar factor and
  fall back to sign.
  """
  if x.ndim < 2:
    return None
  return x.reshape(-1, x.shape[-1])


def orthogonalize(c: jax.Array, method: str = 'newton_schulz',
                  steps: Optional[int] = None) -> jax.Array:
  r"""The polar factor :math:`UV^\top` of a matrix, by Newton-Schulz.

  With :math:`X_0 = C/\|C\|_F` (so :math:`\sigma_{\max}(X_0) \le 1`) and
  the smaller side first:

  .. math::

    \text{newton\_schulz:}\quad X_{k+1} = \tfrac32 X_k
      - \tfrac12 X_k X_k^\top X_k, \qquad
    \text{quintic:}\quad X_{k+1} = aX_k + (bA_k + cA_k^2)X_k,\ A_k =
      X_kX_k^\top.

  The cubic iteration maps each singular value by :math:`s \mapsto
  \tfrac32 s - \tfrac12 s^3`, which rises monotonically to 1 on
  :math:`(0, 1]` and never overshoots it; singular values above
  :math:`1.5^{-k}\|C\|_F` reach 1 within :math:`k` steps and then
  converge quadratically. Its default 20 steps are accurate to 1e-5 in
  spectral norm for condition numbers up to 100 (measured,
  ``tests/test_spectral.py``). Muon's quintic
  :math:`(a, b, c) = (3.4445, -4.7750, 2.0315)` takes 5 steps and leaves
  the singular values in about :math:`[0.7, 1.2]`: fast, not accurate.

  Cost for an :math:`n \times m` matrix, :math:`n \le m`: two products of
  :math:`n^2 m` multiply-adds per cubic step, so :math:`40 n^2 m` for the
  default 20 steps (the quintic's 5 steps: about :math:`10 n^2 m + 5n^3`),
  against :math:`nm` for sign. The arithmetic is float32 at the highest
  matmul precision. :math:`C = 0` gives 0; a NaN or ``inf`` anywhere gives
  NaN everywhere.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx._src.spectral import orthogonalize
    >>> orthogonalize(jnp.array([[3.0, 0.0], [0.0, 0.5]]))
    Array([[1., 0.],
           [0., 1.]], dtype=float32)
  """
  c = _f32(c)
  wide = c.shape[0] <= c.shape[1]
  x = c if wide else c.T
  scale = jnp.max(jnp.abs(x), initial=0.0)
  safe = jnp.where(scale > 0, scale, 1.0)
  norm = jnp.sqrt(jnp.sum(jnp.square(x / safe)))
  x = x / safe / jnp.where(norm > 0, norm, 1.0)

  def cubic(_, x):
    return 1.5 * x - 0.5 * jnp.matmul(
        jnp.matmul(x, x.T, precision=_HIGHEST), x, precision=_HIGHEST)

  def quintic(_, x):
    a, b, c5 = QUINTIC
    gram = jnp.matmul(x, x.T, precision=_HIGHEST)
    poly = b * gram + c5 * jnp.matmul(gram, gram, precision=_HIGHEST)
    return a * x + jnp.matmul(poly, x, precision=_HIGHEST)

  steps = DEFAULT_STEPS[method] if steps is None else steps
  x = jax.lax.fori_loop(0, steps, cubic if method == 'newton_schulz'
                        else quintic, x)
  x = x if wide else x.T
  return jnp.where(jnp.all(jnp.isfinite(c)), x, jnp.nan)


def _spectral_norm(x: jax.Array) -> jax.Array:
  return jnp.linalg.norm(x, ord=2)


def _nuclear_norm(x: jax.Array) -> jax.Array:
  return jnp.sum(jnp.linalg.svd(x, compute_uv=False))


def _nonfinite(matrix: jax.Array, value: jax.Array) -> jax.Array:
  """``value``, or NaN if ``matrix`` holds a NaN, else inf if an inf (the
  SVD would give NaN for an inf)."""
  return jnp.where(jnp.any(jnp.isnan(matrix)), jnp.nan,
                   jnp.where(jnp.all(jnp.isfinite(matrix)), value, jnp.inf))


def _gauge_leaf(x: jax.Array) -> jax.Array:
  matrix = as_matrix(x)
  if matrix is None:
    return jnp.max(jnp.abs(x), initial=0.0)
  if matrix.size == 0:
    return jnp.zeros([], jnp.float32)
  return _nonfinite(matrix, _spectral_norm(matrix))


def _k_leaf(x: jax.Array) -> jax.Array:
  matrix = as_matrix(x)
  if matrix is None:
    return jnp.sum(jnp.abs(x))
  if matrix.size == 0:
    return jnp.zeros([], jnp.float32)
  return _nonfinite(matrix, _nuclear_norm(matrix))


def _refuse_complex(name: str, tree: Any) -> None:
  for leaf in jax.tree.leaves(tree):
    if is_complex(leaf):
      raise TypeError(
          f'{name} has a complex leaf of shape {jnp.shape(leaf)}: the '
          'spectral reshaper refuses complex leaves (the polar factor of a '
          'complex matrix is not that of its real view); use another '
          'reshaper or split the leaf into real parameters.')


def spectral_reshaper(method: str = 'newton_schulz',
                      steps: Optional[int] = None) -> Reshaper:
  r"""Lion-K with :math:`K(X) = \|X\|_*`: the polar factor of each matrix.

  .. math::

    \nabla K(C) = UV^\top \quad (C = U\Sigma V^\top),\qquad
    K^* = \iota\{\sigma_{\max}(Y) \le 1\}

  so Lion-K keeps :math:`\sigma_{\max}(\lambda\theta) \le 1` for every
  matrix leaf. Leaves of rank 3 or more (convolution kernels) are reshaped
  to fan-in x fan-out first; vectors and scalars fall back to sign, with
  their box :math:`\|\lambda\theta\|_\infty \le 1`. ``constraint(params,
  weight_decay)`` is the largest of :math:`\lambda\sigma_{\max}` over the
  matrices and :math:`\lambda\|\cdot\|_\infty` over the rest; ``k`` the sum
  of nuclear norms and :math:`\ell_1` norms. The polar factor is computed
  by ``lionx._src.spectral.orthogonalize`` (see there for the accuracy
  and cost of each ``method``); the diagnostics use an exact SVD.

  With the default convergent Newton-Schulz iteration the output's singular
  values never exceed 1, so the invariance of the constraint holds; Muon's
  ``'quintic'`` leaves singular values up to about 1.2, so
  :math:`\sigma_{\max}(\lambda\theta)` can exceed 1 by that much. Complex
  leaves are refused. Leaves of bfloat16 are computed in float32.

  Args:
    method: ``'newton_schulz'`` (convergent cubic, the default) or
      ``'quintic'`` (Muon's 5-step iteration).
    steps: iterations (default 20 for ``newton_schulz``, 5 for
      ``quintic``); a Python int >= 1 (below 2**31).

  Returns:
    A :class:`lionx.Reshaper`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> r = lionx.spectral_reshaper()
    >>> c = {'w': jnp.array([[2.0, 0.0], [0.0, -0.1]]), 'b': jnp.array([-3.0])}
    >>> out, _ = r.update(c, r.init(c))
    >>> out['w'], out['b']
    (Array([[ 1.,  0.],
           [ 0., -1.]], dtype=float32), Array([-1.], dtype=float32))
    >>> float(r.constraint({'w': jnp.array([[3.0, 4.0]])}, 0.1))  # 0.1 * 5
    0.5...
  """
  checks.one_of('method', method, METHODS)
  if steps is not None:
    if isinstance(steps, bool) or not isinstance(steps, int):
      raise TypeError(f'steps={steps!r}: expected a Python int >= 1.')
    if not 1 <= steps <= MAX_STEPS:
      raise ValueError(
          f'steps={steps!r}: expected a Python int >= 1 and <= {MAX_STEPS}.')
  name = f'spectral({method}, {steps or DEFAULT_STEPS[method]} steps)'

  def leaf(x: jax.Array) -> jax.Array:
    x32 = _f32(x)
    matrix = as_matrix(x32)
    if matrix is None:
      return jnp.sign(x32)
    if matrix.size == 0:
      return x32
    return orthogonalize(matrix, method, steps).reshape(x.shape)

  def grad_k(tree):
    _refuse_complex('updates', tree)
    return jax.tree.map(leaf, tree)

  def gauge(tree):
    _refuse_complex('params', tree)
    return _max([_gauge_leaf(x) for x in _leaves(tree)])

  def k(tree):
    _refuse_complex('updates', tree)
    return _sum([_k_leaf(x) for x in _leaves(tree)])

  def conjugate(tree):
    g = gauge(tree)
    return jnp.where(jnp.isnan(g), jnp.nan,
                     jnp.where(g <= 1.0 + _TOL, 0.0, jnp.inf))

  return make_reshaper(name, grad_k, k, conjugate, gauge, real_view=False)


# One registry holds every reshaper (lionx.RESHAPERS).
RESHAPERS['spectral'] = spectral_reshaper
