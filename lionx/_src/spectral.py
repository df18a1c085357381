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

import functools
import math
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from optax.contrib import MuonDimensionNumbers

from lionx._src import checks
from lionx._src.norms import exponent as _exponent
from lionx._src.norms import f32 as _f32
from lionx._src.norms import leaves as _leaves
from lionx._src.norms import lp as _lp
from lionx._src.norms import scale_pow2 as _scale_pow2
from lionx._src.norms import tree_max as _max
from lionx._src.norms import tree_sum as _sum
from lionx._src.realview import is_complex
from lionx._src.reshapers import RESHAPERS
from lionx._src.reshapers import Reshaper
from lionx._src.reshapers import make_reshaper

METHODS = ('polar_express', 'quintic')
# Deprecated in lionx 0.3 (its Frobenius start was inaccurate at n >= 256):
# the name now runs the default method.
DEPRECATED_METHODS = {'newton_schulz': 'polar_express'}
MAX_STEPS = 2 ** 31 - 1  # the loop counter is an int32.
# Muon's quintic iteration (Jordan et al. 2024): fast, not convergent.
QUINTIC = (3.4445, -4.7750, 2.0315)
# The optimal odd quintics of Polar Express (Amsel, Persson, Musco, Gower
# 2025, Algorithm 1, greedy): p_t minimises max |1 - p| over [l_t, u_t],
# from [l_0, u_0] = [3e-4, 1], then l_{t+1} = p_t(l_t), u_{t+1} = 2 -
# l_{t+1}. Computed here by the Remez exchange in float64 (without the
# paper's bfloat16 "cushion" and safety factors, which float32 does not
# need); tests/test_spectral.py derives them again from that definition.
# After the 7th every singular value in [3e-4, 1] is within 2.1e-4 of 1,
# after the 8th within 6e-12 (in exact arithmetic); the 8th is about
# Newton-Schulz's quintic (15, -10, 3)/8, which also grows those below.
POLAR_EXPRESS_LOWER = 3e-4
POLAR_EXPRESS = (
    (8.5010644832556217, -25.229464213757772, 18.725849411838368),
    (4.2345167632506966, -3.1445529597257065, 0.58469582903794792),
    (4.1628247546679669, -3.0947899116230642, 0.57902014154107284),
    (3.8890711420173929, -2.9026155049528928, 0.55711384474725034),
    (3.1156150976874524, -2.3355817700390613, 0.49276349306424705),
    (2.1509213664238787, -1.5309787649031612, 0.40403158283967033),
    (1.8801152893842015, -1.2556719854601053, 0.37556764984863045),
    (1.8750000465049899, -1.2500000515848355, 0.37500000507984649),
)
# 'polar_express' is the 8 polynomials, then Newton-Schulz's cubic; its
# steps count both, so it takes at least 9 (one polishing step).
DEFAULT_STEPS = {'polar_express': len(POLAR_EXPRESS) + 1, 'quintic': 5}
MIN_STEPS = {'polar_express': len(POLAR_EXPRESS) + 1, 'quintic': 1}
# The start divides by an upper bound of sigma_max (the Schatten-8 norm),
# times this margin for its float32 rounding.
_SAFETY = 1.01
_TOL = 1e-5  # slack for float rounding when testing membership of dom K*.
_HIGHEST = jax.lax.Precision.HIGHEST
PyTree = Any


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a, b, precision=_HIGHEST)


def as_matrix(x: jax.Array) -> Optional[jax.Array]:
  """A leaf as the matrix the reshaper orthogonalises, or None (sign).

  The default rule: matrices are themselves; a leaf of rank 3 or more (a
  convolution kernel, ``(h, w, c_in, c_out)`` in Flax) is reshaped to
  fan-in x fan-out, ``(h * w * c_in, c_out)``; vectors and scalars have no
  polar factor and fall back to sign. ``weight_dimension_numbers`` of
  :func:`spectral_reshaper` says otherwise (stacked layers).
  """
  if x.ndim < 2:
    return None
  return x.reshape(-1, x.shape[-1])


def _polar_express(x: jax.Array, steps: int) -> jax.Array:
  """The polar factor of a wide, finite float32 matrix (n <= m)."""
  # An exact power-of-two start: the largest entry in [1/2, 1), so that no
  # product below overflows and nothing is a reciprocal that could flush
  # to zero (any scaling of C has the same polar factor).
  x = _scale_pow2(x, -_exponent(jnp.max(jnp.abs(x), initial=0.0)))
  gram = _mm(x, x.T)
  gram2 = _mm(gram, gram)
  # sigma_max^2 <= ||X X^T X X^T||_F^(1/2) (the Schatten-8 norm squared),
  # within n^(1/4) of it: the smallest singular values start at least
  # n^(-1/8) / kappa, not n^(-1/2) / kappa as with ||X||_F.
  s2 = jnp.sqrt(_lp(gram2, 2.0)) * _SAFETY ** 2
  s2 = jnp.where(s2 > 0, s2, 1.0)
  # The first polynomial reuses the Gram matrices: A = G / s2.
  a, b, c = POLAR_EXPRESS[0]
  poly = (b / s2) * gram + (c / (s2 * s2)) * gram2
  x = x / jnp.sqrt(s2)
  x = a * x + _mm(poly, x)

  def quintic(x, abc):
    gram = _mm(x, x.T)
    poly = abc[1] * gram + abc[2] * _mm(gram, gram)
    return abc[0] * x + _mm(poly, x), None

  x, _ = jax.lax.scan(quintic, x,
                      jnp.asarray(POLAR_EXPRESS[1:], jnp.float32))

  def cubic(_, x):  # Newton-Schulz: s -> 3/2 s - 1/2 s^3 <= 1.
    return 1.5 * x - 0.5 * _mm(_mm(x, x.T), x)

  return jax.lax.fori_loop(0, steps - len(POLAR_EXPRESS), cubic, x)


def _muon_quintic(x: jax.Array, steps: int) -> jax.Array:
  """Muon's 5-step quintic from X / ||X||_F (n <= m, finite)."""
  x = _scale_pow2(x, -_exponent(jnp.max(jnp.abs(x), initial=0.0)))
  norm = jnp.sqrt(jnp.sum(jnp.square(x)))
  x = x / jnp.where(norm > 0, norm, 1.0)

  def quintic(_, x):
    a, b, c = QUINTIC
    gram = _mm(x, x.T)
    poly = b * gram + c * _mm(gram, gram)
    return a * x + _mm(poly, x)

  return jax.lax.fori_loop(0, steps, quintic, x)


def orthogonalize(c: jax.Array, method: str = 'polar_express',
                  steps: Optional[int] = None) -> jax.Array:
  r"""The polar factor :math:`UV^\top` of a matrix, by odd polynomials.

  The smaller side first (:math:`C` is :math:`n \times m`, :math:`n \le
  m`, else transposed). ``'polar_express'`` (the default) starts from

  .. math::

    X_0 = C / s, \qquad s = 1.01\,\|(CC^\top)^2\|_F^{1/4}
      \ \ge\ \sigma_{\max}(C),

  the Schatten-8 norm, which is within :math:`n^{1/8}` of
  :math:`\sigma_{\max}` (2.6 at :math:`n = 2048`; :math:`\|C\|_F` is
  within :math:`\sqrt n`), and costs nothing: the first step needs
  :math:`CC^\top` and its square anyway. Then 8 odd quintics
  :math:`X \leftarrow aX + (bA + cA^2)X`, :math:`A = XX^\top`, with the
  optimal coefficients of Polar Express (Amsel et al. 2025) for singular
  values in :math:`[3\cdot10^{-4}, 1]`, map every singular value of
  :math:`X_0` from there to 1 (within :math:`10^{-11}` in exact
  arithmetic); then Newton-Schulz's cubic :math:`X \leftarrow \tfrac32 X
  - \tfrac12 XX^\top X` polishes, and maps :math:`[0, \sqrt3)` into
  :math:`[0, 1]`, so no output singular value exceeds 1 (beyond float32
  rounding). ``steps`` counts both (default and minimum 9: one polishing
  step); more steps are more cubic ones, which also finish singular
  values below :math:`3\cdot10^{-4} s` (they grow by about 1.5 a step).

  Accuracy, measured (``benchmarks/spectral.py``): :math:`\|X -
  UV^\top\|_2 \le 2.1\cdot10^{-4}` for every condition number up to 100 and
  every spectrum tried, at :math:`n \times n` and :math:`n \times 4n`,
  :math:`n` = 256 to 2048, in float32 (``tests/test_spectral.py`` asserts
  :math:`10^{-3}` at 256 and 1024). A singular value below about
  :math:`1.5\cdot10^{-4}\sigma_{\max}/n^{1/8}` is not finished in the default
  steps: it comes out between 0 and 1.

  Muon's ``'quintic'`` :math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`
  from :math:`C/\|C\|_F` takes 5 steps and leaves the singular values in
  about :math:`[0.7, 1.2]`: fast, not accurate.

  Cost for :math:`n \le m`: :math:`2n^2m + n^3` multiply-adds per quintic
  step and :math:`2n^2 m` per cubic one, so :math:`26 n^3` for a square
  matrix with the default steps (the quintic's 5 steps: :math:`15 n^3`),
  against :math:`nm` for sign. The arithmetic is float32 at the highest
  matmul precision. Every scaling is by a power of two or a normal
  number, so inputs up to the float32 maximum are exact. :math:`C = 0`
  gives 0; a NaN or ``inf`` anywhere gives NaN everywhere.

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
  finite = jnp.all(jnp.isfinite(x))
  x = jnp.where(finite, x, 0.0)  # keeps the iteration free of inf * 0
  steps = DEFAULT_STEPS[method] if steps is None else steps
  if method == 'polar_express':
    x = _polar_express(x, steps)
  else:
    x = _muon_quintic(x, steps)
  x = x if wide else x.T
  return jnp.where(finite, x, jnp.nan)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _orthogonalize_stack(stack: jax.Array, method: str,
                         steps: Optional[int]) -> jax.Array:
  """:func:`orthogonalize` of each matrix of a (B, n, m) stack, compiled
  once per shape (also when the reshaper runs eagerly)."""
  return jax.vmap(lambda m: orthogonalize(m, method, steps))(stack)


# Stacked layers: which axes are the matrix.


def _axes(value: Any, what: str, where: str, shape) -> tuple[int, ...]:
  """``reduction_axis`` or ``output_axis`` as non-negative ints."""
  ndim = len(shape)
  items = (value,) if isinstance(value, (int, np.integer)) else value
  try:
    items = tuple(items)
  except TypeError:
    items = None
  if items is None or not items or any(
      isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer))
      for i in items):
    raise TypeError(
        f'weight_dimension_numbers{where}: {what}={value!r}; expected an int '
        'or a non-empty sequence of ints.')
  for i in items:
    if not -ndim <= i < ndim:
      raise ValueError(
          f'weight_dimension_numbers{where}: {what}={value!r} is out of '
          f'range for a leaf of shape {tuple(shape)} (rank {ndim}).')
  return tuple(int(i) % ndim for i in items)


class _Layout:
  """How a leaf is a stack of matrices: transpose to (batch, rows, cols)."""

  def __init__(self, shape, dims: Optional[MuonDimensionNumbers],
               where: str):
    ndim = len(shape)
    if dims is None:  # the default rule: (all but the last, the last).
      rows, cols = tuple(range(ndim - 1)), (ndim - 1,)
    else:
      if ndim < 2:
        raise ValueError(
            f'weight_dimension_numbers{where}: {dims!r} for a leaf of shape '
            f'{tuple(shape)}; a matrix needs rank >= 2 (give None there: '
            'sign).')
      rows = _axes(dims.reduction_axis, 'reduction_axis', where, shape)
      cols = _axes(dims.output_axis, 'output_axis', where, shape)
      both = rows + cols
      if len(set(both)) != len(both):
        raise ValueError(
            f'weight_dimension_numbers{where}: {dims!r} repeats an axis of '
            f'the leaf of shape {tuple(shape)}; reduction_axis and '
            'output_axis must be distinct axes.')
    batch = tuple(i for i in range(ndim) if i not in rows + cols)
    self.perm = batch + rows + cols
    self.inverse = tuple(int(i) for i in np.argsort(self.perm))
    self.batch_shape = tuple(shape[i] for i in batch)
    self.matrix = (math.prod(shape[i] for i in rows),
                   math.prod(shape[i] for i in cols))
    self.permuted = tuple(shape[i] for i in self.perm)

  def stack(self, x: jax.Array) -> jax.Array:
    """(batch..., rows, cols) -> (B, rows, cols)."""
    return jnp.transpose(x, self.perm).reshape((-1,) + self.matrix)

  def unstack(self, y: jax.Array) -> jax.Array:
    return jnp.transpose(y.reshape(self.permuted), self.inverse)


def _is_dims(x: Any) -> bool:
  return x is None or isinstance(x, MuonDimensionNumbers)


def _check_dimension_numbers(value: Any) -> None:
  """Refuses anything but None, a callable or a tree of dims/None."""
  if value is None:
    return
  if isinstance(value, type):
    raise TypeError(
        f'weight_dimension_numbers={value!r}: expected a tree of '
        'optax.contrib.MuonDimensionNumbers (or None), or a callable of '
        'the params returning one; got a type.')
  if callable(value) and not isinstance(value, MuonDimensionNumbers):
    bad = checks.one_argument(value)
    if bad is not None:
      raise TypeError(f'weight_dimension_numbers={value!r}: expected a '
                      f'tree or a callable of the params, got {bad}.')
    return
  for path, leaf in jax.tree_util.tree_flatten_with_path(
      value, is_leaf=_is_dims)[0]:
    if not _is_dims(leaf):
      where = jax.tree_util.keystr(path) or '(the root)'
      raise TypeError(
          f'weight_dimension_numbers has a leaf at {where} that is '
          f'{leaf!r:.60}; expected optax.contrib.MuonDimensionNumbers '
          '(which axes are the matrix) or None (sign).')


def _layouts(tree: PyTree, dims: Any, name: str) -> list[Optional[_Layout]]:
  """A layout (or None: sign) per leaf of ``tree``, in leaf order."""
  paths_leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  if dims is None:
    return [_Layout(np.shape(x), None, '') if np.ndim(x) >= 2 else None
            for _, x in paths_leaves]
  spec = dims(tree) if callable(dims) and not isinstance(
      dims, MuonDimensionNumbers) else dims
  if callable(dims) and not isinstance(dims, MuonDimensionNumbers):
    _check_dimension_numbers(spec)
  spec_leaves, spec_def = jax.tree.flatten(spec, is_leaf=_is_dims)
  try:
    subtrees = spec_def.flatten_up_to(tree)
  except (ValueError, TypeError):
    raise ValueError(
        f'weight_dimension_numbers has tree structure {spec_def}, which is '
        f'not a prefix of the {name} structure {jax.tree.structure(tree)}.'
    ) from None
  per_leaf = []
  for d, sub in zip(spec_leaves, subtrees):
    per_leaf += [d] * len(jax.tree.leaves(sub))
  out = []
  for (path, x), d in zip(paths_leaves, per_leaf):
    where = f' at {jax.tree_util.keystr(path) or "(the root)"}'
    out.append(None if d is None else _Layout(np.shape(x), d, where))
  return out


def _map_leaves(fn: Callable, tree: PyTree, dims: Any, name: str) -> PyTree:
  """``fn(leaf, layout)`` on every leaf, keeping the structure."""
  values, treedef = jax.tree.flatten(tree)
  layouts = _layouts(tree, dims, name)
  return treedef.unflatten([fn(x, l) for x, l in zip(values, layouts)])


def _nonfinite(matrices: jax.Array, values: jax.Array) -> jax.Array:
  """``values`` per matrix of a (B, r, c) stack, or NaN where a matrix holds
  a NaN, else inf where an inf (the SVD would give NaN for an inf)."""
  nan = jnp.any(jnp.isnan(matrices), axis=(-2, -1))
  finite = jnp.all(jnp.isfinite(matrices), axis=(-2, -1))
  return jnp.where(nan, jnp.nan, jnp.where(finite, values, jnp.inf))


def _singular_values(matrices: jax.Array) -> jax.Array:
  safe = jnp.where(jnp.isfinite(matrices), matrices, 0.0)
  return jnp.linalg.svd(safe, compute_uv=False)


def _per_matrix(x: jax.Array, layout: Optional[_Layout],
                kind: str) -> jax.Array:
  """sigma_max (``'gauge'``) or the nuclear norm (``'k'``) of each matrix
  of a leaf, shaped like its batch axes; for a sign leaf, max |x| or
  sum |x| (a scalar)."""
  if layout is None:
    if kind == 'gauge':
      return jnp.max(jnp.abs(x), initial=0.0)
    return jnp.sum(jnp.abs(x))
  if x.size == 0:
    return jnp.zeros(layout.batch_shape, jnp.float32)
  stack = layout.stack(x)
  sv = _singular_values(stack)
  values = sv[..., 0] if kind == 'gauge' else jnp.sum(sv, axis=-1)
  return _nonfinite(stack, values).reshape(layout.batch_shape)


def _refuse_complex(name: str, tree: Any) -> None:
  for leaf in jax.tree.leaves(tree):
    if is_complex(leaf):
      raise TypeError(
          f'{name} has a complex leaf of shape {jnp.shape(leaf)}: the '
          'spectral reshaper refuses complex leaves (the polar factor of a '
          'complex matrix is not that of its real view); use another '
          'reshaper or split the leaf into real parameters.')


def spectral_reshaper(
    method: str = 'polar_express',
    steps: Optional[int] = None,
    *,
    weight_dimension_numbers: Any = None,
) -> Reshaper:
  r"""Lion-K with :math:`K(X) = \|X\|_*`: the polar factor of each matrix.

  .. math::

    \nabla K(C) = UV^\top \quad (C = U\Sigma V^\top),\qquad
    K^* = \iota\{\sigma_{\max}(Y) \le 1\}

  so Lion-K keeps :math:`\sigma_{\max}(\lambda\theta) \le 1` for every
  matrix. By default a matrix leaf is itself, a leaf of rank 3 or more (a
  convolution kernel) is reshaped to fan-in x fan-out, and vectors and
  scalars fall back to sign, with their box
  :math:`\|\lambda\theta\|_\infty \le 1`.

  **Stacked layers.** ``weight_dimension_numbers`` says which axes are the
  matrix, as in ``optax.contrib.muon``: a tree with the structure of (a
  prefix of) the params, or a callable of the params returning one, whose
  leaves are ``optax.contrib.MuonDimensionNumbers(reduction_axis,
  output_axis)`` (the rows and columns, an int or a sequence of ints
  each; every other axis is a batch axis, one matrix per index) or None
  (that leaf is not a matrix: sign). A scanned model's ``(L, d_in,
  d_out)`` kernel with ``MuonDimensionNumbers(1, 2)`` is ``L`` matrices of
  ``d_in x d_out``, each with its own polar factor and its own
  :math:`\sigma_{\max}(\lambda\theta_l) \le 1`; without it, it is one
  :math:`L d_\text{in} \times d_\text{out}` matrix. Unlike optax, leaving
  the argument out (None) is not "every leaf a 2-D matrix" but the default
  rule above.

  ``constraint(params, weight_decay)`` is the largest of
  :math:`\lambda\sigma_{\max}` over all the matrices and
  :math:`\lambda\|\cdot\|_\infty` over the sign leaves;
  ``matrix_constraints(params, weight_decay)`` reports them one by one: a
  tree like the params whose leaf holds :math:`\lambda\sigma_{\max}` of
  each of its matrices (shaped like its batch axes; a scalar for a plain
  matrix) or :math:`\lambda\|\cdot\|_\infty` for a sign leaf. ``k`` is the
  sum of the nuclear norms and :math:`\ell_1` norms. The diagnostics use
  an exact SVD.

  The polar factor is computed by ``lionx._src.spectral.orthogonalize``
  (accuracy and cost of each ``method`` there). The default
  ``'polar_express'`` (the optimal polynomials of Amsel et al. 2025 from a
  Schatten-8 start, then Newton-Schulz) is exact to :math:`10^{-3}` in
  spectral norm, measured :math:`\le 2.1\cdot10^{-4}`, for condition numbers
  up to 100 at sizes 256 to 2048, and its output's singular values never
  exceed 1, so the invariance of the constraint holds; Muon's
  ``'quintic'`` leaves singular values up to about 1.2, so
  :math:`\sigma_{\max}(\lambda\theta)` can exceed 1 by that much. Complex
  leaves are refused. Leaves of bfloat16 are computed in float32.

  Args:
    method: ``'polar_express'`` (the default, exact) or ``'quintic'``
      (Muon's 5-step iteration, approximate). ``'newton_schulz'``, the
      default before lionx 0.3, is deprecated: it runs
      ``'polar_express'``.
    steps: iterations (default 9 for ``'polar_express'``: 8 Polar Express
      polynomials and one Newton-Schulz step, the minimum; more add
      Newton-Schulz steps; default 5 for ``'quintic'``); a Python int
      (below 2**31).
    weight_dimension_numbers: which axes of each leaf are the matrix (see
      above); None for the default rule.

  Returns:
    A :class:`lionx.Reshaper` (with ``matrix_constraints``).

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

    Two stacked 2 x 2 layers, each its own matrix:

    >>> from optax.contrib import MuonDimensionNumbers
    >>> r = lionx.spectral_reshaper(
    ...     weight_dimension_numbers={'w': MuonDimensionNumbers(1, 2)})
    >>> w = jnp.array([[[3.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [0.0, 0.0]]])
    >>> r.matrix_constraints({'w': w}, 0.1)['w']  # 0.1 sigma_max each
    Array([0.3, 0.2], dtype=float32)
  """
  if isinstance(method, str) and method in DEPRECATED_METHODS:
    warnings.warn(
        f'spectral_reshaper(method={method!r}) is deprecated since lionx 0.3 '
        f'and runs {DEPRECATED_METHODS[method]!r}, the default (exact at '
        'sizes >= 256, where the old iteration was not); pass '
        f'method={DEPRECATED_METHODS[method]!r} or leave it out.',
        DeprecationWarning, stacklevel=2)
    method = DEPRECATED_METHODS[method]
  checks.one_of('method', method, METHODS)
  if steps is not None:
    if isinstance(steps, bool) or not isinstance(steps, int):
      raise TypeError(f'steps={steps!r}: expected a Python int >= '
                      f'{MIN_STEPS[method]}.')
    if not MIN_STEPS[method] <= steps <= MAX_STEPS:
      hint = (f' ({len(POLAR_EXPRESS)} Polar Express polynomials and at '
              "least one Newton-Schulz step; for a cheaper approximate step "
              "use method='quintic')" if method == 'polar_express' else '')
      raise ValueError(
          f'steps={steps!r}: expected a Python int >= {MIN_STEPS[method]} '
          f'and <= {MAX_STEPS} with method={method!r}{hint}.')
  _check_dimension_numbers(weight_dimension_numbers)
  dims = weight_dimension_numbers
  name = f'spectral({method}, {steps or DEFAULT_STEPS[method]} steps)'

  def leaf(x: jax.Array, layout: Optional[_Layout]) -> jax.Array:
    x32 = _f32(x)
    if layout is None:
      return jnp.sign(x32)
    if x32.size == 0:
      return x32
    return layout.unstack(_orthogonalize_stack(layout.stack(x32), method,
                                               steps))

  def grad_k(tree):
    _refuse_complex('updates', tree)
    return _map_leaves(leaf, tree, dims, 'updates')

  def per_matrix(tree, kind, name):
    values = jax.tree.leaves(tree)
    return [_per_matrix(_f32(x), l, kind)
            for x, l in zip(values, _layouts(tree, dims, name))]

  def gauge(tree):
    _refuse_complex('params', tree)
    return _max([jnp.max(v, initial=0.0) if v.size else jnp.zeros([])
                 for v in per_matrix(tree, 'gauge', 'params')])

  def k(tree):
    _refuse_complex('updates', tree)
    return _sum([jnp.sum(v) for v in per_matrix(tree, 'k', 'updates')])

  def conjugate(tree):
    g = gauge(tree)
    return jnp.where(jnp.isnan(g), jnp.nan,
                     jnp.where(g <= 1.0 + _TOL, 0.0, jnp.inf))

  reshaper = make_reshaper(name, grad_k, k, conjugate, gauge, real_view=False)

  def matrix_constraints(params: PyTree, weight_decay: Any) -> PyTree:
    r""":math:`\lambda\sigma_{\max}` of each matrix (see the factory)."""
    checks.numeric_leaves('params', params)
    checks.non_negative('weight_decay', weight_decay)
    _refuse_complex('params', params)
    lam = _f32(weight_decay)
    scaled = jax.tree.map(lambda p: lam * _f32(p), params)
    return _map_leaves(lambda x, l: _per_matrix(x, l, 'gauge'), scaled,
                       dims, 'params')

  reshaper.matrix_constraints = matrix_constraints
  return reshaper


# One registry holds every reshaper (lionx.RESHAPERS).
RESHAPERS['spectral'] = spectral_reshaper
