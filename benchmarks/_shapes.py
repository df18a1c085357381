"""Parameter trees of the benchmarks' models, as ShapeDtypeStructs.

Hard-coded, so that the benchmarks need neither the training harness nor a
model implementation:

* :func:`resnet18` is the harness's CIFAR ResNet-18 (10 classes): 62
  leaves, 11,173,962 parameters;
* :func:`gpt2_small` is GPT-2 Small's 148 leaves, 124,439,808 parameters
  (token and position embeddings, 12 blocks, final layer norm).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

RESNET18_PARAMS = 11_173_962
GPT2_SMALL_PARAMS = 124_439_808


def _tree(shapes: dict[str, tuple[int, ...]], dtype: Any) -> dict[str, Any]:
  return {k: jax.ShapeDtypeStruct(s, dtype) for k, s in shapes.items()}


def resnet18(dtype: Any = jnp.float32, num_classes: int = 10
             ) -> dict[str, Any]:
  """CIFAR ResNet-18: 3x3 stem, 4 stages of 2 basic blocks, a dense head."""
  shapes = {'stem/conv': (3, 3, 3, 64), 'stem/bn/scale': (64,),
            'stem/bn/bias': (64,)}
  cin = 64
  for stage, cout in enumerate((64, 128, 256, 512)):
    for block in range(2):
      name = f's{stage}b{block}'
      shapes[f'{name}/conv1'] = (3, 3, cin, cout)
      shapes[f'{name}/conv2'] = (3, 3, cout, cout)
      for bn in ('bn1', 'bn2'):
        shapes[f'{name}/{bn}/scale'] = (cout,)
        shapes[f'{name}/{bn}/bias'] = (cout,)
      if cin != cout:
        shapes[f'{name}/shortcut/conv'] = (1, 1, cin, cout)
        shapes[f'{name}/shortcut/bn/scale'] = (cout,)
        shapes[f'{name}/shortcut/bn/bias'] = (cout,)
      cin = cout
  shapes['head/kernel'] = (512, num_classes)
  shapes['head/bias'] = (num_classes,)
  return _tree(shapes, dtype)


def gpt2_small(dtype: Any = jnp.float32) -> dict[str, Any]:
  """GPT-2 Small (124M): vocabulary 50257, context 1024, width 768."""
  d, vocab, context = 768, 50257, 1024
  shapes = {'wte': (vocab, d), 'wpe': (context, d)}
  for i in range(12):
    for ln in ('ln_1', 'ln_2'):
      shapes[f'h{i}/{ln}/scale'] = (d,)
      shapes[f'h{i}/{ln}/bias'] = (d,)
    shapes[f'h{i}/attn/c_attn/kernel'] = (d, 3 * d)
    shapes[f'h{i}/attn/c_attn/bias'] = (3 * d,)
    shapes[f'h{i}/attn/c_proj/kernel'] = (d, d)
    shapes[f'h{i}/attn/c_proj/bias'] = (d,)
    shapes[f'h{i}/mlp/c_fc/kernel'] = (d, 4 * d)
    shapes[f'h{i}/mlp/c_fc/bias'] = (4 * d,)
    shapes[f'h{i}/mlp/c_proj/kernel'] = (4 * d, d)
    shapes[f'h{i}/mlp/c_proj/bias'] = (d,)
  shapes['ln_f/scale'] = (d,)
  shapes['ln_f/bias'] = (d,)
  return _tree(shapes, dtype)


def size(tree: Any) -> int:
  """Number of parameters of a tree of arrays or ShapeDtypeStructs."""
  return sum(int(x.size) for x in jax.tree.leaves(tree))
