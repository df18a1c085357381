r"""The theory's diagnostics at each evaluation, from :mod:`lionx.metrics`.

Given the parameters, the exact gradient :math:`\nabla f(\theta)` of the
logging pass and the optimizer state, :func:`make_diagnostics` gives one
jitted function returning the fields below (float32 scalars):

* ``grad_l1``, ``grad_l2``, ``grad_norm_ratio`` :math:`r =
  \|\nabla f\|_1/\|\nabla f\|_2`, ``grad_norm_ratio_over_sqrt_d`` and
  ``sqrt_d`` (Dong, Li, Lin (8));
* ``box_linf_scaled`` :math:`\lambda\|\theta\|_\infty`,
  ``box_max_violation`` and ``box_fraction_at_bound`` (the box of Theorem
  2), with the run's weight decay :math:`\lambda` for every optimizer;
* ``constraint``: the reshaper's own constraint (:math:`\|\lambda\theta\|_q`
  for Lion-:math:`\ell_p`; the box for sign), for the Lion-K family;
* ``kkt_residual`` :math:`\lambda\langle\nabla f,\theta\rangle +
  \|\nabla f\|_1` (Lemma 1);
* ``sign_agreement`` and ``zero_sign_fraction`` of the optimizer's
  direction for :math:`\nabla f` (:func:`lionx.train.optimizers.direction`)
  against :math:`\nabla f`.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import jax

from lionx import metrics
from lionx.train import fields
from lionx.train import optimizers

Diagnostics = Callable[[Any, Any, Any], dict[str, jax.Array]]

_CACHE: dict[str, Diagnostics] = {}


def make_diagnostics(config: optimizers.OptimizerConfig) -> Diagnostics:
  """A jitted ``(params, grads, opt_state) -> dict`` (see the module doc).

  Equal optimizer settings share one compiled function.
  """
  key = json.dumps({'row': id(optimizers.spec(config.name)),
                    'optimizer': fields.to_dict(config)}, sort_keys=True)
  if key not in _CACHE:
    _CACHE[key] = _build(config)
  return _CACHE[key]


def _build(config: optimizers.OptimizerConfig) -> Diagnostics:
  weight_decay = optimizers.weight_decay(config)
  reshaper = optimizers.reshaper(config)

  @jax.jit
  def diagnostics(params, grads, opt_state):
    ratio = metrics.grad_norm_ratio(grads)
    box = metrics.box_feasibility(params, weight_decay)
    if reshaper is None or reshaper.name == 'sign':
      constraint = box.linf_scaled
    else:
      constraint = metrics.box_feasibility(
          params, weight_decay, reshaper=reshaper).linf_scaled
    stats = metrics.update_stats(
        optimizers.direction(config, opt_state, grads), grads)
    return {
        'grad_l1': metrics.tree_l1(grads),
        'grad_l2': metrics.tree_l2(grads),
        'grad_norm_ratio': ratio.ratio,
        'grad_norm_ratio_over_sqrt_d': ratio.ratio_over_sqrt_d,
        'sqrt_d': ratio.sqrt_d,
        'box_linf_scaled': box.linf_scaled,
        'box_max_violation': box.max_violation,
        'box_fraction_at_bound': box.fraction_at_bound,
        'constraint': constraint,
        'kkt_residual': metrics.kkt_residual(params, grads, weight_decay),
        'sign_agreement': stats.sign_agreement,
        'zero_sign_fraction': stats.zero_sign_fraction,
    }
  return diagnostics
