"""Rematerialisation (``model.remat``): a backward pass that recomputes
each block's activations from its input instead of keeping them.

* :func:`scan_blocks` runs blocks of one structure (the transformer
  blocks of GPT, BERT and ViT) as one ``lax.scan`` over their parameters
  stacked layer by layer, its body under ``jax.checkpoint``. The scan is
  what makes the saving hold on every backend: XLA:CPU removes
  ``jax.checkpoint``'s optimisation barriers before common-subexpression
  elimination, which then shares a recomputation written out beside the
  forward pass with the forward pass itself; the backward loop of a scan
  cannot be shared. The cost is one copy of the blocks' parameters a
  step (the stack; the parameters stay one leaf per block).
* :func:`checkpoint_stages` runs blocks of differing shapes (a ResNet's
  stages) each stage under ``nnx.remat``. XLA:CPU drops the barrier there
  too, so the saving shows on a GPU or TPU only.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax


def scan_blocks(blocks: Sequence[nnx.Module], x: jax.Array) -> jax.Array:
  """``x`` through ``blocks`` (all of one structure), keeping only each
  block's input for the backward pass.

  Example:
    >>> from flax import nnx
    >>> from lionx.train.models import remat
    >>> blocks = [nnx.Linear(4, 4, rngs=nnx.Rngs(i)) for i in range(3)]
    >>> x = jnp.ones((2, 4))
    >>> plain = blocks[2](blocks[1](blocks[0](x)))
    >>> bool(jnp.allclose(remat.scan_blocks(blocks, x), plain, atol=1e-6))
    True
  """
  graphdef, _ = nnx.split(blocks[0])
  states = [nnx.state(block) for block in blocks]
  if any(nnx.graphdef(block) != graphdef for block in blocks[1:]):
    raise ValueError('scan_blocks: the blocks differ in structure; '
                     'expected blocks of one structure.')
  stacked = jax.tree.map(lambda *layers: jnp.stack(layers), *states)

  @jax.checkpoint
  def body(x: jax.Array, state: nnx.State) -> tuple[jax.Array, None]:
    return nnx.merge(graphdef, state)(x), None

  return lax.scan(body, x, stacked)[0]


def sequential(blocks: Sequence[nnx.Module], x: jax.Array) -> jax.Array:
  """``x`` through ``blocks`` in turn, every activation kept."""
  for block in blocks:
    x = block(x)
  return x


def run_blocks(blocks: Sequence[nnx.Module], x: jax.Array,
               remat: bool) -> jax.Array:
  """:func:`scan_blocks` with ``remat``, else :func:`sequential`."""
  return scan_blocks(blocks, x) if remat else sequential(blocks, x)


def checkpoint_stages(stages: Sequence[Sequence[nnx.Module]],
                      x: jax.Array) -> jax.Array:
  """``x`` through each stage's blocks in turn, each stage under
  ``nnx.remat`` (BatchNorm statistics update as without it)."""
  step = nnx.remat(sequential)
  for stage in stages:
    x = step(list(stage), x)
  return x
