r"""The theory's diagnostics at each evaluation, from :mod:`lionx.metrics`.

Given the parameters, the exact gradient :math:`\nabla f(\theta)` of the
logging pass and the optimizer state, :func:`make_diagnostics` gives one
jitted function returning the fields below (float32 scalars):

* ``grad_l1``, ``grad_l2``, ``grad_norm_ratio`` :math:`r =
  \|\nabla f\|_1/\|\nabla f\|_2`, ``grad_norm_ratio_over_sqrt_d`` and
  ``sqrt_d`` (Dong, Li, Lin (8));
* ``box_linf_scaled`` :math:`\lambda'\|\theta\|_\infty`,
  ``box_max_violation`` and ``box_fraction_at_bound`` (the box of Theorem
  2), where ``box_weight_decay`` :math:`\lambda'` is the run's weight decay
  under its convention at this step (:func:`lionx.effective_weight_decay`:
  :math:`\lambda` for ``paper``, :math:`\lambda/\eta_{\text{peak}}` for
  ``independent``, :math:`\lambda\eta_t/\eta_{\text{peak}}` for
  ``corrected``), and :math:`\lambda` for the optimizers outside the Lion
  family;
* ``constraint``: NaN for cautious weight decay, whose decay implies no
  constraint; else the reshaper's own constraint
  (:math:`\|\lambda'\theta\|_q` for Lion-:math:`\ell_p`; the box for
  sign), for the Lion-K family;
* ``kkt_residual`` :math:`\lambda'\langle\nabla f,\theta\rangle +
  \|\nabla f\|_1` (Lemma 1);
* ``sign_agreement`` and ``zero_sign_fraction`` of the optimizer's
  direction for :math:`\nabla f`
  (:meth:`lionx.train.optimizers.Optimizer.direction`) against
  :math:`\nabla f` (NaN for an optimizer without a sign-like direction,
  e.g. Muon);
* with ``optimizer.clip_norm``: ``grad_norm_preclip``, the global norm of
  the last step's minibatch gradient before clipping, and
  ``clipped_fraction``, the share of the steps so far that were clipped.

With ``optimizer.decay='matrices'`` the box, the constraint and the KKT
residual are those of the decayed leaves alone (the others have no box).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from lionx import metrics
from lionx.train import optimizers

Diagnostics = Callable[[Any, Any, Any, Any], dict[str, jax.Array]]


def make_diagnostics(optimizer: optimizers.Optimizer) -> Diagnostics:
  """A jitted ``(params, grads, opt_state, step) -> dict`` (module doc) for
  a run of ``optimizer``; ``step`` is the number of updates made so far."""
  reshaper = optimizer.reshaper()
  has_box = optimizer.row.box
  mask = optimizer.settings.mask
  clipping = optimizer.clips

  @jax.jit
  def diagnostics(params, grads, opt_state, step):
    weight_decay = optimizer.box_weight_decay(step)
    ratio = metrics.grad_norm_ratio(grads)
    extra = {'grad_l1': metrics.tree_l1(grads),
             'grad_l2': metrics.tree_l2(grads)}
    if clipping:
      clip = optimizers.find(opt_state, optimizers.ClipState)
      extra.update(grad_norm_preclip=clip.norm, clipped_fraction=(
          clip.clipped / jnp.maximum(clip.count, 1)))
    direction = optimizer.direction(opt_state, grads)
    if direction is None:
      agreement = zeros = jnp.full([], jnp.nan)
    else:
      stats = metrics.update_stats(direction, grads)
      agreement, zeros = stats.sign_agreement, stats.zero_sign_fraction
    if mask is not None:  # the box and KKT of the decayed leaves alone
      decayed = mask(params)
      params, grads = (jax.tree.map(lambda m, x: x if m else None,
                                    decayed, tree) for tree in (params, grads))
    box = metrics.box_feasibility(params, weight_decay)
    if not has_box:
      constraint = jnp.full([], jnp.nan)
    elif reshaper is None or reshaper.name == 'sign':
      constraint = box.linf_scaled
    else:
      constraint = metrics.box_feasibility(
          params, weight_decay, reshaper=reshaper).linf_scaled
    return {
        'grad_norm_ratio': ratio.ratio,
        'grad_norm_ratio_over_sqrt_d': ratio.ratio_over_sqrt_d,
        'sqrt_d': ratio.sqrt_d,
        'box_weight_decay': weight_decay,
        'box_linf_scaled': box.linf_scaled,
        'box_max_violation': box.max_violation,
        'box_fraction_at_bound': box.fraction_at_bound,
        'constraint': constraint,
        'kkt_residual': metrics.kkt_residual(params, grads, weight_decay),
        'sign_agreement': agreement,
        'zero_sign_fraction': zeros,
        **extra,
    }
  return diagnostics
