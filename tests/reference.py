"""Independent NumPy implementations written from the papers' equations.

Nothing here imports lionx: the tests compare lionx against these.
"""

from __future__ import annotations

import numpy as np


def lion_step(theta, m, g, lr, b1, b2, wd, grad_k=np.sign):
  """One step of Algorithm 1 (Dong, Li, Lin), with sign -> grad_k for Lion-K.

  c_k = b1 m_{k-1} + (1-b1) g_k
  theta_{k+1} = theta_k - lr (grad_k(c_k) + wd theta_k)
  m_k = b2 m_{k-1} + (1-b2) g_k
  """
  c = b1 * m + (1 - b1) * g
  theta = theta - lr * (grad_k(c) + wd * theta)
  m = b2 * m + (1 - b2) * g
  return theta, m


def cautious_lion_step(theta, m, g, lr, b1, b2, wd):
  """Cautious Lion (Liang et al. 2024) for one tensor."""
  c = b1 * m + (1 - b1) * g
  u = np.sign(c)
  phi = (u * g > 0).astype(u.dtype)
  step = u * phi * (u.size / (phi.sum() + 1))
  theta = theta - lr * (step + wd * theta)
  m = b2 * m + (1 - b2) * g
  return theta, m


def lp_grad(x, p):
  """sign(x)|x|^{p-1} / ||x||_p^{p-1}; 0 at x = 0 (Chen et al. Table 2)."""
  norm = np.sum(np.abs(x) ** p) ** (1 / p)
  if norm == 0:
    return np.zeros_like(x)
  return np.sign(x) * np.abs(x) ** (p - 1) / norm ** (p - 1)


def lion_step_convention(theta, m, g, lr_t, lr_peak, b1, b2, wd, convention,
                         grad_k=np.sign):
  """Algorithm 1 with the decay step of a weight-decay convention.

  'paper' (optax, PyTorch, google/automl): the decay step lr_t wd theta;
  'independent' (big_vision; lucidrains' decoupled_weight_decay=True):
  wd (lr_t / lr_peak) theta; 'corrected' (timm): wd lr_t^2 / lr_peak theta.
  """
  c = b1 * m + (1 - b1) * g
  if convention == 'paper':
    decay = lr_t * wd * theta
  elif convention == 'independent':
    decay = wd * (lr_t / lr_peak) * theta
  else:
    decay = wd * lr_t ** 2 / lr_peak * theta
  theta = theta - lr_t * grad_k(c) - decay
  m = b2 * m + (1 - b2) * g
  return theta, m


def cautious_weight_decay_step(theta, u, lr, wd):
  """Cautious weight decay (Chen et al. 2025, arXiv 2510.12402):
  theta <- theta - lr (u + wd 1[u theta >= 0] theta)."""
  return theta - lr * (u + wd * (u * theta >= 0) * theta)


def cautious_mask(u, g):
  """The cautious mask of one tensor (Liang et al. 2024, Algorithm 1):
  phi = 1[u g > 0] (a zero in u or g is not agreement);
  u <- n / (sum(phi) + 1) (u phi)."""
  u, g = np.asarray(u, np.float64), np.asarray(g, np.float64)
  phi = (np.sign(u) * np.sign(g) > 0).astype(np.float64)
  return u * phi * (u.size / (phi.sum() + 1))


def sparse_sign(x, e):
  """sign(x) 1(|x| > e) (Chen et al. 2023b, Table 2 row 3): the dead zone
  |x| <= e is closed, so |x| = e gives 0."""
  x = np.asarray(x, np.float64)
  return np.sign(x) * (np.abs(x) > e)


def topk_sign(x, k):
  """sign(x) on the k largest |x| (Chen et al. 2023b, Table 2 row 4), ties
  to the lower index; 0 elsewhere. A chosen 0 stays 0."""
  x = np.asarray(x, np.float64).reshape(-1)
  order = sorted(range(x.size), key=lambda i: (-abs(x[i]), i))[:k]
  out = np.zeros_like(x)
  out[order] = np.sign(x[order])
  return out


def huber_grad(x, e):
  """clip(x, -e, e) / e, the gradient of the Huber K (Chen et al. 2023b,
  Table 2 row 5)."""
  return np.clip(np.asarray(x, np.float64), -e, e) / e


def sign_votes(deltas, aggregation):
  """Distributed Lion's aggregation (Liu et al. 2024) of the workers' votes
  deltas[i] in {-1, 0, 1}: sign(sum_i delta_i) ('majority', a tie gives 0)
  or mean_i delta_i ('average')."""
  total = np.sum(np.sign(np.asarray(deltas, np.float64)), axis=0)
  if aggregation == 'majority':
    return np.sign(total)
  return total / len(deltas)
