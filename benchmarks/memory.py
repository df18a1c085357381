"""Bytes per parameter of one jitted training step, from XLA's own analysis.

For each optimizer setting and parameter tree, the script compiles one
step with the parameters and the optimizer state donated
(``jax.jit(step, donate_argnums=(0, 1))``) and reads
``compiled.memory_analysis()``: the step's peak is its arguments plus its
outputs, less what the outputs alias, plus its temporaries. Two ways of
handing the step its gradient (``--grads``):

* ``step``: ``(params, opt_state, x) -> (params, opt_state)``, the gradient
  made inside the step, as a backward pass would make it (a stand-in
  ``grad = x * params`` that XLA must materialise, in the parameters'
  dtype), so that the peak holds the parameters, the gradients and the
  optimizer state at once, as in training; ``other temp`` is the
  temporaries beyond the gradient's buffer;
* ``arg``: ``(params, opt_state, grads) -> (params, opt_state)``, the
  gradient an argument of the step that it may not overwrite (it is not
  donated); ``other temp`` is all of the temporaries.

Activations are left out (they depend on the batch, not on the
optimizer). ``ideal`` is params + gradient + optimizer state: a step that
updates everything in place, with no temporary. Nothing is run: the
numbers are those of the compiled program, for the device JAX runs on.

Settings:

* ``AdamW fp32``: ``optax.adamw`` on float32 parameters (about 16 B);
* ``Lion fp32``: ``lionx.lion`` (about 12 B);
* ``Lion bf16 momentum``: ``lionx.lion(mu_dtype=jnp.bfloat16)``;
* ``Lion int8 momentum``: ``lionx.lion(mu_dtype=jnp.int8)``, float32 params;
* ``Lion 6-byte``: bfloat16 params and gradients,
  ``lionx.compensated(lionx.lion(mu_dtype=jnp.int8))`` (an int8 rounding
  residual per parameter and int8 momentum);
* ``Lion int8 momentum, fused`` and ``Lion 6-byte, fused`` (on a GPU:
  ``chunked``): the same two settings on the other shape of lionx's 8-bit
  step than the backend's default (see ``lion_8bit_leaf``);
* ``flash_lion`` (flashoptim-jax, when installed): its defaults, bfloat16
  params with an int8 error correction and int8 momentum in groups of 32
  with float16 scales; its unfused path off GPU.

Parameter trees: ``a``, one leaf of 64Mi float32 parameters; ``resnet18``
(``b`` of ``update_step.py``), the CIFAR ResNet-18 (11,173,962); ``c``,
1000 leaves of 1024; ``gpt2``, GPT-2 Small's parameter shapes
(124,439,808), from ``benchmarks/_shapes.py``; ``tiny``, two leaves (a
quick check).

Usage (from the repository root):

  python benchmarks/memory.py            # print the tables
  python benchmarks/memory.py --models a,gpt2 --grads arg
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
from lionx._src import quantized  # noqa: E402

SCRIPT = 'memory.py'
LR, WD = 1e-4, 0.1
MODELS = {'a': ('(a) one 64M-parameter leaf', lambda: {
              'w': jax.ShapeDtypeStruct((64 * 2 ** 20,), jnp.float32)}),
          'resnet18': ('(b) ResNet-18 (CIFAR)', _shapes.resnet18),
          'c': ('(c) 1000 leaves x 1024', lambda: {
              f'w{i:04d}': jax.ShapeDtypeStruct((1024,), jnp.float32)
              for i in range(1000)}),
          'gpt2': ('GPT-2 Small shapes', _shapes.gpt2_small),
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
      'Lion bf16 momentum': (jnp.float32, lambda: lionx.lion(
          learning_rate=LR, weight_decay=WD, mu_dtype=jnp.bfloat16),
                             'optax'),
      'Lion int8 momentum': (jnp.float32, lambda: lionx.lion(
          learning_rate=LR, weight_decay=WD, mu_dtype=jnp.int8), 'optax'),
      'Lion 6-byte (bf16 + int8 residual + int8 momentum)': (
          jnp.bfloat16, lambda: lionx.compensated(lionx.lion(
              learning_rate=LR, weight_decay=WD, mu_dtype=jnp.int8)),
          'optax'),
  }
  # The other shape of lionx's 8-bit step than this backend's default.
  other = ('fused' if jax.default_backend() in quantized.LOOP_BACKENDS
           else 'chunked')
  out[f'Lion int8 momentum, {other}'] = (
      jnp.float32, out['Lion int8 momentum'][1], f'optax-{other}')
  out[f'Lion 6-byte, {other}'] = (
      jnp.bfloat16,
      out['Lion 6-byte (bf16 + int8 residual + int8 momentum)'][1],
      f'optax-{other}')
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


def make_step(opt: Any, kind: str, grads: str = 'step'
              ) -> Callable[..., Any]:
  """The step of an optimizer: (params, state, x or grads) -> both new."""
  def step(params, state, x):
    grads_ = _grads(params, x) if grads == 'step' else x
    if kind == 'flash':
      return opt.step(params, state, grads_)
    updates, state = opt.update(grads_, state, params)
    return optax.apply_updates(params, updates), state
  return step


def analyse(model: str, name: str, grads: str = 'step'
            ) -> dict[str, float]:
  """Compiles one step and returns its byte counts per parameter.

  ``grads``: ``'step'`` (made inside the step) or ``'arg'`` (an argument,
  not donated). ``temp`` is the temporaries beyond the gradient's buffer
  (``'step'``) or all of them (``'arg'``); ``temp_mib`` the same in MiB.
  """
  dtype, factory, kind = settings()[name]
  params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype),
                        MODELS[model][1]())
  n = _shapes.size(params)
  opt = factory()
  state = jax.eval_shape(opt.init, params)
  x = (jax.ShapeDtypeStruct((), jnp.float32) if grads == 'step'
       else params)
  saved = quantized.LOOP_BACKENDS
  if kind == 'optax-fused':
    quantized.LOOP_BACKENDS = ()
  elif kind == 'optax-chunked':
    quantized.LOOP_BACKENDS = (jax.default_backend(),)
  try:
    compiled = jax.jit(make_step(opt, kind, grads), donate_argnums=(0, 1)
                       ).lower(params, state, x).compile()
  finally:
    quantized.LOOP_BACKENDS = saved
  mem = compiled.memory_analysis()
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes
          - mem.alias_size_in_bytes + mem.temp_size_in_bytes)
  nbytes = lambda t: sum(  # noqa: E731
      int(l.size) * jnp.dtype(l.dtype).itemsize for l in jax.tree.leaves(t))
  g_bytes = nbytes(params)  # the gradient has the params' dtype here
  temp = mem.temp_size_in_bytes - (g_bytes if grads == 'step' else 0)
  return {'n': n, 'params': nbytes(params) / n, 'grads': g_bytes / n,
          'state': nbytes(state) / n, 'temp': temp / n,
          'temp_mib': temp / 2 ** 20, 'peak': peak / n,
          'ideal': (nbytes(params) + g_bytes + nbytes(state)) / n}


def _args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='a,resnet18,c,gpt2',
                      help='comma-separated, of ' + ', '.join(MODELS))
  parser.add_argument('--grads', default='arg,step',
                      help='comma-separated, of arg (an argument of the '
                      'step, not donated) and step (made in the step)')
  parser.add_argument('--out', default='',
                      help='also write the tables to this new file')
  parser.add_argument('--write', action='store_true',
                      help='replace our section of benchmarks/RESULTS.md')
  args = parser.parse_args()
  if args.out and pathlib.Path(args.out).exists():
    parser.error(f'--out={args.out}: the file exists; not overwriting it')
  args.grads = args.grads.split(',')
  if not args.grads or set(args.grads) - {'arg', 'step'}:
    parser.error(f'--grads={",".join(args.grads)}: expected some of arg, '
                 'step')
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
           f'{",".join(args.models)} --grads {",".join(args.grads)}`',
           '- peak = arguments + outputs - aliased + temporaries of the '
           'compiled step (`compiled.memory_analysis()`), with params and '
           'optimizer state donated (`jax.jit(step, donate_argnums=(0, '
           '1))`); activations left out. Gradient `step`: made inside the '
           'step (as by a backward pass), `other temp` is the temporaries '
           'beyond its buffer; gradient `arg`: an argument of the step '
           '(not donated), `other temp` is all the temporaries. `ideal` is '
           'params + gradient + optimizer state (everything in place).',
           '- flashoptim-jax: ' + (
               'not installed' if flashoptim() is None else
               f'{flashoptim().__name__} from PyPI (`pip install '
               'flashoptim-jax`), `flash_lion` at its defaults except the '
               'learning rate and weight decay'), '']
  print('\n'.join(lines), flush=True)
  for model in args.models:
    rows = []
    for name in settings():
      for grads in args.grads:
        r = analyse(model, name, grads)
        rows.append([name, grads, f'{r["params"]:.3f}', f'{r["grads"]:.3f}',
                     f'{r["state"]:.3f}', f'{r["temp"]:.3f}',
                     f'{r["temp_mib"]:.2f}', f'**{r["peak"]:.3f}**',
                     f'{r["ideal"]:.3f}'])
    section = [f'### {MODELS[model][0]}: N = {r["n"]:,} parameters', '',
               *_common.table(['setting', 'gradient', 'params B/param',
                               'grads B/param', 'optimizer state B/param',
                               'other temp B/param', 'other temp MiB',
                               'peak B/param', 'ideal B/param'], rows),
               '']
    print('\n'.join(section), flush=True)
    lines += section
  if args.out:
    pathlib.Path(args.out).write_text('\n'.join(lines) + '\n')
  if args.write:
    _common.write_section(SCRIPT, lines)


if __name__ == '__main__':
  main(_args())
