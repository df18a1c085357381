"""lionx transforms as the tx of flax.nnx.Optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lionx


class MLP(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(4, 16, rngs=rngs)
    self.l2 = nnx.Linear(16, 1, rngs=rngs)

  def __call__(self, x):
    return self.l2(jax.nn.relu(self.l1(x)))


@pytest.mark.slow
@pytest.mark.parametrize('tx', [
    lionx.lion(3e-3, weight_decay=0.1),
    lionx.lion_k(3e-3, lionx.lp_reshaper(2, 'leaf')),
    lionx.cautious_lion(3e-3),
    lionx.lion(3e-3, mu_dtype=jnp.bfloat16),
], ids=['lion', 'lion_lp', 'cautious', 'bf16_mu'])
def test_nnx_optimizer_trains(tx):
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((64, 4)), jnp.float32)
  y = jnp.sum(x, axis=1, keepdims=True)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(
        lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(300)]
  assert losses[-1] < 0.2 * losses[0]
