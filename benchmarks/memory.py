"""Bytes per parameter of one jitted training step, from XLA's own analysis.

For each optimizer setting and model, the script compiles one training
step, ``(params, opt_state, x) -> (params, opt_state)`` with the
parameters and the optimizer state donated, and reads
``compiled.memory_analysis()``: the step's peak is its arguments plus its
outputs, less what the outputs alias, plus its temporaries. The gradient
is made inside the step, as a backward pass would make it (a stand-in
``grad = x * params`` that XLA must materialise, in the parameters' dtype),
so that the peak holds the parameters, the gradients and the optimizer
state at once, as in training; activations are left out (they depend on
the batch, not on the optimizer). Nothing is run: the numbers are those of
the compiled program, for the device JAX runs on.

Settings:

* ``AdamW fp32``: ``optax.adamw`` on float32 parameters (about 16 B);
* ``Lion fp32``: ``lionx.lion`` (about 12 B);
* ``Lion int8 momentum``: ``lionx.lion(mu_dtype=jnp.int8)``, float32 params;
* ``Lion 6-byte``: bfloat16 params and gradients,
  ``lionx.compensated(lionx.lion(mu_dtype=jnp.int8))`` (an int8 rounding
  residual per parameter and int8 momentum);
* ``flash_lion`` (flashoptim-jax, when installed): its defaults, bfloat16
  params with an int8 error correction and int8 momentum in groups of 32
  with float16 scales; its unfused path off GPU.

Models: GPT-2 Small's parameter shapes (124,439,808) and the CIFAR
ResNet-18 (11,173,962), from ``benchmarks/_shapes.py``.

Usage (from the repository root):

  python benchmarks/memory.py            # print the table
  python benchmarks/memory.py --write    # also update RESULTS.md
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402  pylint: disable=g-import-not-at-top
import _shapes  # noqa: E402  pylint: disable=g-import-not-at-top

import lionx  # noqa: E402

SCRIPT = 'memory.py'
LR, WD = 1e-4, 0.1
MODELS = {'gpt2': ('GPT-2 Small shapes', _shapes.gpt2_small),
          'resnet18': ('ResNet-18 (CIFAR)', _shapes.resnet18),
          # A quick check: two leaves.
          'tiny': ('two leaves (a quick check)', lambda: {
              'w': jax.ShapeDtypeStruct((512, 1024), jnp.float32),
              'b': jax.ShapeDtypeStruct((1024,), jnp.float32)})}


def flashoptim():
  """The flashoptim_jax module, or None when it is not installed."""
  try:
    import flashoptim_jax  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return flashoptim_jax


def settings() -> dict[str, tuple[Any, Callable[[], Any], str]]:
  """name -> (param dtype, optimizer factory, kind: 'optax' or 'flash')."""
  out = {
      'AdamW fp32': (jnp.float32, lambda: optax.adamw(
          1e-3, weight_decay=1e-4), 'optax'),
      'Lion fp32': (jnp.float32, lambda: lionx.lion(
          learning_rate=LR, weight_decay=WD), 'optax'),
      'Lion int8 momentum': (jnp.float32, lambda: lionx.lion(
          learning_rate=LR, weight_decay=WD, mu_dtype=jnp.int8), 'optax'),
      'Lion 6-byte (bf16 + int8 residual + int8 momentum)': (
          jnp.bfloat16, lambda: lionx.compensated(lionx.lion(
              learning_rate=LR, weight_decay=WD, mu_dtype=jnp.int8)),
          'optax'),
  }
  fo = flashoptim()
  if fo is not None:
    fused = jax.default_backend() == 'gpu'
    out[f'flash_lion defaults ({"fused" if fused else "unfused"})'] = (
        jnp.bfloat16, lambda: fo.flash_lion(
            learning_rate=LR, weight_decay=WD, fused=fused), 'flash')
  return out


def _grads(params: Any, x: jax.Array) -> Any:
  """A stand-in backward pass: x * params, materialised in params' dtype."""
  def backward(params, x):
    return jax.grad(lambda p: sum(
        0.5 * x * jnp.sum(jnp.square(l.astype(jnp.float32)))
        for l in jax.tree.leaves(p)))(params)
  # A cond's result is a buffer of its own, as a backward pass's would be.
  return jax.lax.cond(x == x, backward, backward, params, x)


def make_step(opt: Any, kind: str) -> Callable[..., Any]:
  """The training step of an optimizer: (params, state, x) -> both new."""
  def step(params, state, x):
    grads = _grads(params, x)
    if kind == 'flash':
      return opt.step(params, state, grads)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def analyse(model: str, name: str) -> dict[str, float]:
  """Compiles one step and returns its byte counts per parameter."""
  dtype, factory, kind = settings()[name]
  params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype),
                        MODELS[model][1]())
  n = _shapes.size(params)
  opt = factory()
  state = jax.eval_shape(opt.init, params)
  x = jax.ShapeDtypeStruct((), jnp.float32)
  compiled = jax.jit(make_step(opt, kind), donate_argnums=(0, 1)).lower(
      params, state, x).compile()
  mem = compiled.memory_analysis()
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes
          - mem.alias_size_in_bytes + mem.temp_size_in_bytes)
  nbytes = lambda t: sum(  # noqa: E731
      int(l.size) * jnp.dtype(l.dtype).itemsize for l in jax.tree.leaves(t))
  grads = nbytes(params)  # the gradient has the params' dtype here
  return {'n': n, 'params': nbytes(params) / n, 'grads': grads / n,
          'state': nbytes(state) / n,
          'temp': (mem.temp_size_in_bytes - grads) / n, 'peak': peak / n}


def _args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='gpt2,resnet18',
                      help='comma-separated, of ' + ', '.join(MODELS))
  parser.add_argument('--out', default='',
                      help='also write the tables to this new file')
  parser.add_argument('--write', action='store_true',
                      help='replace our section of benchmarks/RESULTS.md')
  args = parser.parse_args()
  if args.out and pathlib.Path(args.out).exists():
    parser.error(f'--out={args.out}: the file exists; not overwriting it')
  args.models = args.models.split(',')
  if not args.models or set(args.models) - set(MODELS):
    parser.error(f'--models={",".join(args.models)}: expected some of '
                 f'{", ".join(MODELS)}')
  return args


def main(args: argparse.Namespace) -> None:
  warnings.filterwarnings('ignore', message='Some donated buffers')
  lines = ['## memory.py: bytes per parameter of one training step', '',
           *_common.machine(),
           f'- command: `python benchmarks/memory.py --models '
           f'{",".join(args.models)}`',
           '- peak = arguments + outputs - aliased + temporaries of the '
           'compiled step (`compiled.memory_analysis()`), with params and '
           'optimizer state donated and the gradient made inside the step '
           '(as by a backward pass; activations left out). `other temp` is '
           'the temporaries beyond the gradient.',
           '- flashoptim-jax: ' + (
               'not installed' if flashoptim() is None else
               f'{flashoptim().__name__} from PyPI (`pip install '
               'flashoptim-jax`), `flash_lion` at its defaults except the '
               'learning rate and weight decay'), '']
  print('\n'.join(lines), flush=True)
  for model in args.models:
    rows = []
    for name in settings():
      r = analyse(model, name)
      rows.append([name, f'{r["params"]:.3f}', f'{r["grads"]:.3f}',
                   f'{r["state"]:.3f}', f'{r["temp"]:.3f}',
                   f'**{r["peak"]:.3f}**'])
    section = [f'### {MODELS[model][0]}: N = {r["n"]:,} parameters', '',
               *_common.table(['setting', 'params B/param', 'grads B/param',
                               'optimizer state B/param',
                               'other temp B/param', 'peak B/param'], rows),
               '']
    print('\n'.join(section), flush=True)
    lines += section
  if args.out:
    pathlib.Path(args.out).write_text('\n'.join(lines) + '\n')
  if args.write:
    _common.write_section(SCRIPT, lines)


if __name__ == '__main__':
  main(_args())
