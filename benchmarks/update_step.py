"""One jitted optimizer step: lionx.lion against optax.lion and optax.adamw.

Each contender is ``step(params, state, grads) -> (params, state)``: the
optimizer's update plus ``optax.apply_updates``, under ``jax.jit`` with the
parameters and the state donated. All contenders of a shape run in one
process, round-robin (one step each per round), and the tables give
medians over the timed rounds. Three parameter trees:

* ``a``: one leaf of 64Mi = 67,108,864 float32 parameters;
* ``b``: the parameters of the CIFAR ResNet-18 (``benchmarks/_shapes.py``,
  62 leaves, 11,173,962 parameters);
* ``c``: 1000 leaves of 1024 parameters.

Contenders: ``lionx.lion`` with float32, bfloat16 and int8 momentum (on
this backend's default shape of the 8-bit step, and with the ``path``
extra on the other shape too: fused on CPU, chunked elsewhere),
``optax.lion`` and ``optax.adamw`` (float32 and bfloat16 momentum);
``lionx 6-byte``, bfloat16 params and gradients through
``lionx.compensated(lionx.lion(mu_dtype=jnp.int8))``; and, when
flashoptim-jax is installed, its ``flash_lion`` with int8 momentum on
float32 params (``master_weight_bits=None``) and at its defaults (bfloat16
params with an int8 correction), fused (Pallas) on a GPU, unfused
elsewhere.

With ``--grads-in-step`` the gradient is made inside the jitted step (by a
stand-in backward pass that XLA must materialise, as in
``benchmarks/memory.py``), as in a training step, rather than passed in:
lionx's int8 momentum writes c over the gradient's buffer, which an input
of the step is not (XLA copies it first).

Columns:

* ``bytes/step``: bytes a step must move at least: parameters read and
  written, gradients read, optimizer state read and written
  (``2 P + G + 2 S``; for float32 Lion ``5 * 4 * N``).
* ``GB/s``: bytes/step divided by the median time.
* ``x optax.lion``: optax.lion's median time over this one's, with the same
  momentum dtype (int8 and the others against float32); above 1 is faster.
* ``x lionx fp32``: the median over rounds of lionx.lion fp32's time over
  this one's in the same round.
* ``% roofline``: GB/s over the bandwidth of a measured roofline, an
  elementwise, in-place, jitted pass that reads three and writes two
  float32 arrays of N entries (the bytes of a float32 Lion step, in one
  loop), timed in the same rounds.
* ``HLO bytes``: bytes the compiled step does move, from its HLO text: each
  top-level instruction (fusion, copy) reads its array operands and writes
  its output once (:func:`hlo_traffic`). XLA:CPU does not fuse two outputs
  into one loop (no multi-output fusion), so a float32 Lion step is two
  loops, ``m`` then ``params``, and moves ``7 * 4 * N`` bytes, not
  ``5 * 4 * N``: 71% of the roofline is the most it can reach.
* ``% roofline at HLO``: HLO bytes over the median time, over the
  roofline's bandwidth: how close each loop runs to the memory's speed.
* ``copied MB``: bytes of the ``copy`` instructions in the compiled step
  (from ``jax.jit(...).lower(...).compile().as_text()``).
* ``state bytes``: ``jax.tree`` byte count of the optimizer state, and its
  ratio to the parameter bytes.

Usage (from the repository root):

  python benchmarks/update_step.py                 # print the tables
  python benchmarks/update_step.py --shapes a --hlo  # and the compiled HLO
  python benchmarks/update_step.py --write         # also update RESULTS.md
  python benchmarks/update_step.py --grads-in-step # gradients as in training

Without ``--write`` nothing is written; with it, only this script's section
of ``benchmarks/RESULTS.md`` is replaced. Times are never asserted in tests.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
from typing import Any
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402  pylint: disable=g-import-not-at-top

import _shapes  # noqa: E402  pylint: disable=g-import-not-at-top
import lionx  # noqa: E402
from lionx._src import quantized  # noqa: E402

SCRIPT = 'update_step.py'
LR, B1, B2, WD = 1e-4, 0.9, 0.99, 0.1
SHAPES = {
    'a': 'one 64M-parameter leaf',
    'b': 'ResNet-18 (CIFAR) parameters',
    'c': '1000 leaves x 1024',
}
MOMENTA = {'fp32': None, 'bf16': jnp.bfloat16, 'int8': jnp.int8}
# Extra contenders, each against optax.lion fp32. 'path': lionx's int8 and
# 6-byte steps again, on the other shape of the 8-bit step than this
# backend's default (fused on CPU, chunked elsewhere).
EXTRAS = ('6-byte', 'flash', 'path')


def param_shapes(shape: str, small: bool = False):
  """The parameter tree of a shape, as a tree of ShapeDtypeStructs.

  ``small`` (a quick check) shrinks (a) to 2^18 entries and (c) to 50
  leaves.
  """
  if shape == 'a':
    return {'w': jax.ShapeDtypeStruct((2 ** 18 if small else 64 * 2 ** 20,),
                                      jnp.float32)}
  if shape == 'c':
    return {f'w{i:04d}': jax.ShapeDtypeStruct((1024,), jnp.float32)
            for i in range(50 if small else 1000)}
  return _shapes.resnet18()


def random_tree(shapes, seed: int):
  leaves, treedef = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return treedef.unflatten([
      jax.random.normal(k, s.shape, s.dtype) for k, s in zip(keys, leaves)])


def flashoptim():
  """The flashoptim_jax module, or None when it is not installed."""
  try:
    import flashoptim_jax  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return flashoptim_jax


def contenders(momenta: list[str], extras: tuple[str, ...] = EXTRAS
               ) -> dict[str, tuple[str, str, Any, Any, str]]:
  """name -> (optimizer, momentum, optimizer object, params dtype, kind).

  ``kind`` is ``'optax'`` (a GradientTransformation), ``'optax-fused'``
  or ``'optax-chunked'`` (the same, its 8-bit step traced on that shape,
  see :func:`lionx._src.quantized.lion_8bit_leaf`) or ``'flash'``
  (flashoptim's ``step(params, state, grads)``).
  """
  out = {}
  for mu in momenta:
    dtype = MOMENTA[mu]
    out[f'lionx.lion {mu}'] = ('lionx.lion', mu, lionx.lion(
        learning_rate=LR, b1=B1, b2=B2, weight_decay=WD, mu_dtype=dtype),
                               jnp.float32, 'optax')
    if mu == 'int8':
      continue
    out[f'optax.lion {mu}'] = ('optax.lion', mu, optax.lion(
        LR, B1, B2, weight_decay=WD, mu_dtype=dtype), jnp.float32, 'optax')
    out[f'optax.adamw {mu}'] = ('optax.adamw', mu, optax.adamw(
        1e-3, weight_decay=1e-4, mu_dtype=dtype), jnp.float32, 'optax')
  if '6-byte' in extras:
    out['lionx 6-byte'] = ('lionx 6-byte', 'int8', lionx.compensated(
        lionx.lion(learning_rate=LR, b1=B1, b2=B2, weight_decay=WD,
                   mu_dtype=jnp.int8)), jnp.bfloat16, 'optax')
  if 'path' in extras:
    other = ('fused' if jax.default_backend() in quantized.LOOP_BACKENDS
             else 'chunked')
    out[f'lionx.lion int8 {other}'] = (
        f'lionx.lion ({other})', 'int8', lionx.lion(
            learning_rate=LR, b1=B1, b2=B2, weight_decay=WD,
            mu_dtype=jnp.int8), jnp.float32, f'optax-{other}')
    if '6-byte' in extras:
      out[f'lionx 6-byte {other}'] = (
          f'lionx 6-byte ({other})', 'int8', lionx.compensated(lionx.lion(
              learning_rate=LR, b1=B1, b2=B2, weight_decay=WD,
              mu_dtype=jnp.int8)), jnp.bfloat16, f'optax-{other}')
  fo = flashoptim()
  if 'flash' in extras and fo is not None:
    fused = jax.default_backend() == 'gpu'
    label = 'fused' if fused else 'unfused'
    out[f'flash_lion int8 {label}'] = (
        f'flash_lion ({label})', 'int8', fo.flash_lion(
            LR, B1, B2, weight_decay=WD, master_weight_bits=None,
            fused=fused), jnp.float32, 'flash')
    out[f'flash_lion defaults {label}'] = (
        f'flash_lion bf16+ecc ({label})', 'int8', fo.flash_lion(
            LR, B1, B2, weight_decay=WD, fused=fused), jnp.bfloat16,
        'flash')
  return out


def backward(params: Any, x: jax.Array) -> Any:
  """A stand-in backward pass: x * params, materialised (a cond's result)."""
  def grad(params, x):
    return jax.tree.map(lambda p: (x * p.astype(jnp.float32)).astype(
        p.dtype), params)
  return jax.lax.cond(x == x, grad, grad, params, x)


def make_step(opt, kind: str = 'optax', grads_in_step: bool = False):
  """The jitted step, params and state donated.

  ``step(params, state, grads)``, or with ``grads_in_step``
  ``step(params, state, x)`` with the gradient made inside.
  """
  def step(params, state, grads):
    if grads_in_step:
      grads = backward(params, grads)
    if kind == 'flash':
      return opt.step(params, state, grads)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return jax.jit(step, donate_argnums=(0, 1))


def compile_step(step, kind: str, *args):
  """``step.lower(*args).compile()``, on the 8-bit step's shape of kind."""
  saved = quantized.LOOP_BACKENDS
  if kind == 'optax-fused':
    quantized.LOOP_BACKENDS = ()
  elif kind == 'optax-chunked':
    quantized.LOOP_BACKENDS = (jax.default_backend(),)
  try:
    return step.lower(*args).compile()
  finally:
    quantized.LOOP_BACKENDS = saved


def roofline_step(x, g):
  """Reads x (2 N) and g (N), writes x (2 N) in place: 5 * 4 * N bytes."""
  return x * 0.5 + g


def nbytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


_COPY = re.compile(r'= (\w+)\[([\d,]*)\]\S* copy\(')


_HLO_DTYPES = {'f32': 'float32', 'bf16': 'bfloat16', 's8': 'int8',
               's16': 'int16', 's32': 'int32', 's64': 'int64',
               'u8': 'uint8', 'u16': 'uint16', 'u32': 'uint32',
               'u64': 'uint64', 'f16': 'float16', 'f64': 'float64',
               'pred': 'bool', 'c64': 'complex64', 'c128': 'complex128'}


def _size(dtype: str, dims: str) -> int:
  """Bytes of an HLO array type such as ``f32[4,256]``."""
  n = int(np.prod([int(d) for d in dims.split(',') if d]))
  return n * jnp.dtype(_HLO_DTYPES.get(dtype, dtype)).itemsize


def copied_bytes(hlo: str) -> int:
  """Bytes written by the top-level ``copy`` instructions of an HLO text."""
  return sum(_size(dtype, dims) for dtype, dims in _COPY.findall(hlo)
             if dtype not in ('token', 'tuple'))


_INSTR = re.compile(
    r'^\s*(?:ROOT )?%(\S+) = (\w+)\[([\d,]*)\]\S* (\S+?)\((.*?)\)')
_TUPLE = re.compile(r'^\s*(?:ROOT )?%(\S+) = \(.*\) (tuple|while)\((.*?)\)')
_NO_TRAFFIC = ('parameter', 'tuple', 'get-tuple-element', 'bitcast',
               'constant')


def hlo_traffic(hlo: str) -> int:
  """Bytes the ENTRY's instructions read and write, from an HLO text.

  Each top-level instruction (a fusion, a copy, ...) is one pass over
  memory: it reads each distinct array operand once and writes its
  output. Parameters, tuples and bitcasts move nothing. A ``while`` loop
  (lionx's 8-bit momentum walks a large leaf in chunks) counts as reading
  each array it starts from once and writing each result used after it.
  """
  sizes, members, loops, total = {}, {}, set(), 0
  for line in entry_computation(hlo).splitlines():
    tuple_match = _TUPLE.match(line)
    if tuple_match:
      name, op, operands = tuple_match.groups()
      names = re.findall(r'%([\w.\-]+)', operands)
      if op == 'tuple':
        members[name] = names
      elif op == 'while':
        loops.add(name)
        total += sum(sizes.get(m, 0) for m in set(members.get(names[0], [])))
      continue
    match = _INSTR.match(line)
    if not match:
      continue
    name, dtype, dims, op, operands = match.groups()
    if dtype in ('token', 'tuple'):
      continue
    sizes[name] = _size(dtype, dims)
    if op == 'get-tuple-element':
      total += sizes[name] if operands.strip('%') in loops else 0
      continue
    if op in _NO_TRAFFIC:
      continue
    read = set(re.findall(r'%([\w.\-]+)', operands))
    total += sizes[name] + sum(sizes.get(r, 0) for r in read)
  return total


def entry_computation(hlo: str) -> str:
  """The ENTRY computation of an HLO text, without metadata."""
  entry = hlo[hlo.index('ENTRY'):]
  entry = re.sub(r', metadata=\{[^}]*\}', '', entry)
  return re.sub(r', backend_config=\{.*\}', '', entry)


def run_shape(shape: str, momenta: list[str], rounds: int, hlo: bool,
              grads_in_step: bool = False, extras: tuple[str, ...] = EXTRAS,
              small: bool = False) -> list[str]:
  shapes = param_shapes(shape, small)
  n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  param_bytes = nbytes(shapes)
  rows, runners, info = [], {}, {}

  for name, (optname, mu, opt, dtype, kind) in contenders(
      momenta, extras).items():
    typed = jax.tree.map(lambda s, d=dtype: jax.ShapeDtypeStruct(s.shape, d),
                         shapes)
    params = random_tree(typed, seed=0)
    grads = (jnp.float32(1e-3) if grads_in_step
             else random_tree(typed, seed=1))
    state = opt.init(params)
    step = make_step(opt, kind, grads_in_step)
    compiled = compile_step(step, kind, params, state, grads)
    text = compiled.as_text()
    if hlo and shape == 'a':
      print(f'\n--- compiled step of {name} (ENTRY) ---')
      print(entry_computation(text))
    state_bytes = nbytes(state)
    p_bytes = nbytes(typed)
    info[name] = {
        'opt': optname, 'mu': mu, 'state': state_bytes,
        'copied': copied_bytes(text), 'hlo': hlo_traffic(text),
        'bytes': 3 * p_bytes + 2 * state_bytes, 'params': p_bytes}
    box = {'params': params, 'state': state}

    def run(step=compiled, box=box, grads=grads):
      def go():
        box['params'], box['state'] = step(box['params'], box['state'],
                                           grads)
        return box['params'], box['state']
      return _common.timed(go)

    runners[name] = run

  blocks = -(-n // 1024)
  x = jnp.zeros((blocks, 2, 1024), jnp.float32)
  gx = jnp.ones((blocks, 1, 1024), jnp.float32)
  roof = jax.jit(roofline_step, donate_argnums=0).lower(x, gx).compile()
  roof_hlo = hlo_traffic(roof.as_text())
  roof_box = {'x': x}

  def run_roof():
    def go():
      roof_box['x'] = roof(roof_box['x'], gx)
      return roof_box['x']
    return _common.timed(go)

  runners['roofline'] = run_roof
  times = _common.interleaved(runners, rounds)
  roof_ms = _common.median_ms(times['roofline'])
  roof_bw = 20 * blocks * 1024 / (roof_ms * 1e-3)

  def ms(opt, mu):
    return _common.median_ms(times[f'{opt} {mu}'])

  for name, d in info.items():
    t = _common.median_ms(times[name])
    base = ms('optax.lion', d['mu'] if d['mu'] in ('fp32', 'bf16')
              else 'fp32')
    bw = d['bytes'] / (t * 1e-3)
    rows.append([
        d['opt'], d['mu'], f'{t:.2f}', f'{d["bytes"] / 1e6:.1f} MB',
        f'{bw / 1e9:.1f}', f'{base / t:.2f}x',
        f'{_common.paired_ratio(times, "lionx.lion fp32", name):.2f}x',
        f'{100 * bw / roof_bw:.0f}%',
        f'{d["hlo"] / 1e6:.1f} MB',
        f'{100 * d["hlo"] / (t * 1e-3) / roof_bw:.0f}%',
        f'{d["copied"] / 1e6:.1f}',
        f'{d["state"]:,} ({d["state"] / param_bytes:.3f}x)'])
  rows.append(['roofline', '-', f'{roof_ms:.2f}',
               f'{20 * blocks * 1024 / 1e6:.1f} MB',
               f'{roof_bw / 1e9:.1f}', '-', '-', '100%',
               f'{roof_hlo / 1e6:.1f} MB', '100%', '0.0', '-'])
  header = ['optimizer', 'momentum', 'median ms', 'bytes/step', 'GB/s',
            'x optax.lion', 'x lionx fp32', '% roofline', 'HLO bytes',
            '% roofline at HLO', 'copied MB', 'state bytes (x fp32 params)']
  label = SHAPES[shape] if not small or shape == 'b' else {
      'a': 'one leaf', 'c': 'leaves x 1024'}[shape]
  lines = [f'### ({shape}) {label}: N = {n:,} parameters, '
           f'{len(jax.tree.leaves(shapes))} leaves, {rounds} rounds'
           + (', gradients made in the step' if grads_in_step else ''),
           '']
  return lines + _common.table(header, rows) + ['']


def _args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shapes', default='abc',
                      help='which trees to run, any of a, b, c')
  parser.add_argument('--momenta', default='fp32,bf16,int8',
                      help='comma-separated momentum dtypes')
  parser.add_argument('--rounds', type=int, default=15,
                      help='timed rounds (>= 10), after 2 warm-up rounds')
  parser.add_argument('--hlo', action='store_true',
                      help='print the compiled ENTRY of each step of (a)')
  parser.add_argument('--small', action='store_true',
                      help='a quick check: (a) 2^18 entries, (c) 50 leaves')
  parser.add_argument('--out', default='',
                      help='also write the tables to this new file')
  parser.add_argument('--grads-in-step', action='store_true',
                      help='make the gradient inside the step, as in '
                      'training, instead of passing it in')
  parser.add_argument('--extras', default=','.join(EXTRAS),
                      help='comma-separated extra contenders, of '
                      + ', '.join(EXTRAS) + ' (empty for none)')
  parser.add_argument('--write', action='store_true',
                      help='replace our section of benchmarks/RESULTS.md')
  args = parser.parse_args()
  if not args.shapes or set(args.shapes) - set(SHAPES):
    parser.error(f'--shapes={args.shapes!r}: expected letters of a, b, c')
  args.momenta = args.momenta.split(',')
  if set(args.momenta) - set(MOMENTA):
    parser.error(f'--momenta: expected some of {tuple(MOMENTA)}')
  if 'fp32' not in args.momenta:
    parser.error('--momenta must include fp32 (optax.lion fp32 is the base '
                 'of int8)')
  if args.rounds < 10:
    parser.error(f'--rounds={args.rounds}: expected >= 10')
  args.extras = tuple(x for x in args.extras.split(',') if x)
  if args.out and pathlib.Path(args.out).exists():
    parser.error(f'--out={args.out}: the file exists; not overwriting it')
  if set(args.extras) - set(EXTRAS):
    parser.error(f'--extras: expected some of {EXTRAS}')
  return args


def main(args: argparse.Namespace) -> None:
  warnings.filterwarnings('ignore', message='Some donated buffers')
  lines = ['## update_step.py: one jitted optimizer step', '',
           *_common.machine(),
           f'- command: `python benchmarks/update_step.py --shapes '
           f'{args.shapes} --momenta {",".join(args.momenta)} --rounds '
           f'{args.rounds} --extras {",".join(args.extras)}'
           + (' --grads-in-step' if args.grads_in_step else '')
           + (' --small' if args.small else '') + '`',
           '- flashoptim-jax: ' + ('not installed' if flashoptim() is None
                                   else 'installed from PyPI'),
           f'- hyperparameters: Lion lr={LR}, b1={B1}, b2={B2}, '
           f'weight_decay={WD}; AdamW lr=1e-3, weight_decay=1e-4 '
           '(its `mu_dtype` applies to the first moment only)',
           '- `bytes/step` is the least a step must move (fp32 Lion: 5 '
           'arrays of N); `HLO bytes` is what the compiled step moves, read '
           'from its HLO (each top-level fusion or copy reads its operands '
           'and writes its output once). XLA:CPU makes no multi-output '
           'fusions, so the fp32 Lion step is two loops (momentum, then '
           'parameters: 7 arrays) and 5/7 = 71% of the roofline is its '
           'ceiling; `% roofline at HLO` shows how near each loop runs to '
           'the memory\'s bandwidth.', '']
  print('\n'.join(lines), flush=True)
  for shape in args.shapes:
    section = run_shape(shape, args.momenta, args.rounds, args.hlo,
                        args.grads_in_step, args.extras, args.small)
    print('\n'.join(section), flush=True)
    lines += section
  if args.out:
    pathlib.Path(args.out).write_text('\n'.join(lines) + '\n')
  if args.write:
    _common.write_section(SCRIPT, lines)


if __name__ == '__main__':
  main(_args())
