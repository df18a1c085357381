"""Lion's state in fewer bytes: final losses over seeds against fp32.

Trains the embedded defaults with the harness's ``train_and_evaluate`` for
each seed and each setting, all at the config's Lion rate:

* ``default``: ``configs/default.py`` (the small CNN on scikit-learn's
  digits, 30 epochs, cosine schedule, weight decay 0.1);
* ``lm``: ``configs/lm_default.py`` (``gpt_tiny`` on the byte corpus, 1000
  steps, warm-up then cosine, weight decay 0.1, (b1, b2) = (0.9, 0.95)).

The settings (``--variants``):

* ``fp32``: ``lionx.lion`` with float32 momentum and parameters, the
  reference;
* ``optax.lion``: the peer, float32 too. Its steps differ from ``fp32``
  only in the sign of coordinates where c_k is at float32 rounding level
  (``tests/test_perf.py``), so its spread shows how far two runs that are
  the same up to rounding drift apart;
* ``bf16``, ``int8``: the momentum stored in bfloat16 or 8 bits
  (``optimizer.mu_dtype``);
* ``6-byte``: bfloat16 parameters (``model.param_dtype``) with an int8
  rounding residual (``optimizer.compensation=int8``, ``lionx.compensated``)
  and int8 momentum: 2 + 1 + 1.016 bytes a parameter of parameters and
  state, and bfloat16 gradients;
* ``bf16 params``: bfloat16 parameters without compensation (float32
  momentum): what the residual is for;
* ``int8-fused``, ``6-byte-fused``: ``int8`` and ``6-byte`` with lionx's
  8-bit step traced on its fused shape (its default off CPU, see
  ``lionx._src.quantized.lion_8bit_leaf``) rather than the chunked one;
* ``flash_lion``: flashoptim-jax's ``flash_lion`` at its defaults (int8
  momentum in groups of 32 with float16 scales, bfloat16 parameters with an
  int8 error correction; unfused off a GPU), on the same bfloat16 model.
  It is not an optax transformation; this script registers it as a harness
  row for its own runs only: ``update`` runs its ``step`` and returns the
  float32 difference of the new and old parameters, on which
  ``optax.apply_updates`` lands each bfloat16 parameter on ``step``'s value
  (exactly, unless it moves across more than 16 binades in one step). Its
  direction is not read, so its sign agreement is NaN. Skipped when
  flashoptim-jax is not installed.

A seed fixes the initialisation and the data order, so that within a seed
the runs differ only in the optimizer's storage. The tables give the final
full training loss f(θ) (the logging pass after the last evaluation) and
the final held-out loss as median and [min, max] over the seeds, and say
whether the ``6-byte`` setting's median lies within fp32's range.

Usage (from the repository root):

  python benchmarks/momentum_dtype.py                  # both configs, 5 seeds
  python benchmarks/momentum_dtype.py --configs default --seeds 2 --epochs 3
  python benchmarks/momentum_dtype.py --write          # also RESULTS.md

The runs go to a temporary directory that is deleted afterwards. Without
``--write`` nothing is written; with it, only this script's section of
``benchmarks/RESULTS.md`` is replaced.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402  pylint: disable=g-import-not-at-top
from lionx._src import quantized  # noqa: E402  pylint: disable=g-import-not-at-top

SCRIPT = 'momentum_dtype.py'
ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = {'default': ROOT / 'configs' / 'default.py',
           'lm': ROOT / 'configs' / 'lm_default.py'}
SIX = {'model.param_dtype': 'bfloat16', 'optimizer.compensation': 'int8',
       'optimizer.mu_dtype': 'int8'}
# variant -> the config fields it sets (optimizer.name defaults to lion).
VARIANTS = {
    'fp32': {'optimizer.mu_dtype': 'float32'},
    'optax.lion': {'optimizer.name': 'optax_lion'},
    'bf16': {'optimizer.mu_dtype': 'bfloat16'},
    'int8': {'optimizer.mu_dtype': 'int8'},
    '6-byte': SIX,
    'bf16 params': {'model.param_dtype': 'bfloat16',
                    'optimizer.mu_dtype': 'float32'},
    'flash_lion': {'optimizer.name': 'flash_lion',
                   'model.param_dtype': 'bfloat16'},
    # lionx's 8-bit step on its fused shape (the default off CPU).
    'int8-fused': {'optimizer.mu_dtype': 'int8'},
    '6-byte-fused': SIX,
}
FUSED = ('int8-fused', '6-byte-fused')
DESCRIPTION = {
    'fp32': 'lionx.lion, float32 momentum and parameters',
    'optax.lion': 'optax.lion, float32',
    'bf16': 'bfloat16 momentum',
    'int8': 'int8 momentum (blocks of 256)',
    '6-byte': 'bf16 params + int8 residual + int8 momentum',
    'bf16 params': 'bf16 params, no residual, float32 momentum',
    'flash_lion': 'flash_lion defaults (bf16 params + int8 ECC, int8 '
                  'momentum in groups of 32)',
    'int8-fused': 'int8, the 8-bit step on its fused (GPU) shape',
    '6-byte-fused': '6-byte, the 8-bit step on its fused (GPU) shape',
}


def flashoptim():
  """The flashoptim_jax module, or None when it is not installed."""
  try:
    import flashoptim_jax  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return flashoptim_jax


class FlashRowState(NamedTuple):
  """flash_lion's state with its momentum as two trees shaped like the
  params (``nnx.Optimizer`` rebuilds a tree of tuples wrongly)."""

  count: jax.Array  # shape=(), int32.
  values: Any  # per leaf: the int8 momentum codes.
  scales: Any  # per leaf: float16, one per group of 32.
  ecc: Any  # per leaf: the int8 correction (or an int32 placeholder).


def flash_transform(fo: Any, learning_rate: Any, b1: float, b2: float,
                    weight_decay: float) -> optax.GradientTransformation:
  """``flash_lion`` as an optax transformation (see the module doc)."""
  opt = fo.flash_lion(learning_rate, b1, b2, weight_decay=weight_decay,
                      fused=jax.default_backend() == 'gpu')

  def is_q(x):
    return isinstance(x, fo.QuantizedArray)

  def to_row(state):
    pick = lambda field: jax.tree.map(  # noqa: E731
        lambda q: getattr(q, field), state.mu, is_leaf=is_q)
    return FlashRowState(state.count, pick('values'), pick('scales'),
                         state.ecc)

  def init(params):
    return to_row(opt.init(params))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError('params=None: flash_lion steps the params itself.')
    mu = jax.tree.map(fo.QuantizedArray, state.values,
                      state.scales)
    new, flash = opt.step(params, fo.FlashLionState(state.count, mu,
                                                    state.ecc), grads)
    return jax.tree.map(
        lambda n, p: n.astype(jnp.float32) - p.astype(jnp.float32),
        new, params), to_row(flash)

  return optax.GradientTransformation(init, update)


def _register_rows(optimizers) -> None:
  """optax.lion (read like lionx's Lion) and flash_lion as harness rows."""

  def optax_lion(s, schedule):
    return optax.lion(schedule, b1=s.b1, b2=s.b2,
                      weight_decay=s.weight_decay)

  def direction(s, opt_state, grads):
    mu = optimizers.find(opt_state, optax.ScaleByLionState).mu
    return jax.tree.map(lambda m, g: s.b1 * m + (1 - s.b1) * g, mu, grads)

  lion = optimizers.OPTIMIZERS['lion']
  optimizers.register('optax_lion', optimizers.OptimizerSpec(
      optax_lion, direction, None, lion.betas, lion.reshaper))
  fo = flashoptim()
  if fo is not None:
    optimizers.register('flash_lion', optimizers.OptimizerSpec(
        lambda s, schedule: flash_transform(fo, schedule, s.b1, s.b2,
                                            s.weight_decay),
        None, None, lion.betas, lion.reshaper))


def _args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default='default,lm',
                      help='comma-separated, of ' + ', '.join(CONFIGS))
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      help='comma-separated, of ' + ', '.join(VARIANTS)
                      + ' (fp32 is always run)')
  parser.add_argument('--seeds', type=int, default=5,
                      help='seeds 0 .. N-1, each with every variant')
  parser.add_argument('--epochs', type=int, default=0,
                      help='override num_epochs of default (0: its 30)')
  parser.add_argument('--steps', type=int, default=0,
                      help='override num_steps of lm (0: its 1000); '
                      'evaluations every steps/5')
  parser.add_argument('--write', action='store_true',
                      help='replace our section of benchmarks/RESULTS.md')
  args = parser.parse_args()
  if args.seeds < 1:
    parser.error(f'--seeds={args.seeds}: expected >= 1')
  for name in ('epochs', 'steps'):
    if getattr(args, name) < 0:
      parser.error(f'--{name}={getattr(args, name)}: expected >= 0')
  args.configs = [c for c in args.configs.split(',') if c]
  if not args.configs or set(args.configs) - set(CONFIGS):
    parser.error(f'--configs: expected some of {tuple(CONFIGS)}')
  variants = [v for v in args.variants.split(',') if v]
  if set(variants) - set(VARIANTS):
    parser.error(f'--variants: expected some of {tuple(VARIANTS)}')
  args.variants = ['fp32'] + [v for v in VARIANTS
                              if v in variants and v != 'fp32']
  return args


def _bytes_per_param(config, task, spec) -> float:
  """Bytes of the parameters and the optimizer state, per parameter."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from lionx.train import optimizers  # pylint: disable=g-import-not-at-top
  model = nnx.eval_shape(lambda: task.create_model(config, spec, 0))
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  n = sum(x.size for x in params)
  # The schedule does not change the state's bytes.
  opt = optimizers.make_optimizer(config, 10 ** 6, steps_per_epoch=1).tx
  pure = nnx.as_pure(nnx.state(model, nnx.Param))
  state = jax.eval_shape(opt.init, pure)
  total = sum(x.size * x.dtype.itemsize for x in params)
  total += sum(x.size * jnp.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(state))
  return total / n


def _version(package: str) -> str:
  return importlib.metadata.version(package)


def _range(values: list[float], fmt: str = '.4g') -> str:
  """``median [min, max]``."""
  return (f'{statistics.median(values):{fmt}} [{min(values):{fmt}}, '
          f'{max(values):{fmt}}]')


def run_config(which: str, args: argparse.Namespace) -> list[str]:
  """Trains every variant and seed of one config; its Markdown lines."""
  from lionx.train import config as config_lib  # pylint: disable=g-import-not-at-top
  from lionx.train import experiment  # pylint: disable=g-import-not-at-top
  from lionx.train import fields  # pylint: disable=g-import-not-at-top
  from lionx.train import tasks  # pylint: disable=g-import-not-at-top

  base = config_lib.load_config(CONFIGS[which])
  if which == 'default' and args.epochs:
    base.num_epochs = args.epochs
  if which == 'lm' and args.steps:
    base.num_steps = args.steps
    base.eval_every_steps = max(1, args.steps // 5)
    base.schedule.warmup_steps = min(base.schedule.warmup_steps,
                                     args.steps // 2)
  base.progress = False
  base.tensorboard = False
  lr = base.optimizer.learning_rates['lion']
  task = tasks.get_task(base.task)
  dataset = task.load_data(base)
  variants = [v for v in args.variants
              if v != 'flash_lion' or flashoptim() is not None]
  finals, held, accuracy, per_param, seconds = {}, {}, {}, {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for seed in range(args.seeds):
      for variant in variants:
        config = config_lib.copy(base)
        config.seed = seed
        changes = {'optimizer.name': 'lion', **VARIANTS[variant]}
        for key, value in changes.items():
          fields.override(config, f'{key}={value}')
        config.optimizer.learning_rates = {config.optimizer.name: lr}
        start = time.perf_counter()
        saved = quantized.LOOP_BACKENDS
        if variant in FUSED:
          quantized.LOOP_BACKENDS = ()
        try:
          result = experiment.train_and_evaluate(
              config, pathlib.Path(tmp) / f'{which}_{variant}_{seed}',
              data=dataset, verbose=False)
        finally:
          quantized.LOOP_BACKENDS = saved
        seconds.setdefault(variant, []).append(time.perf_counter() - start)
        last = result.rows[-1]
        finals[variant, seed] = last['full_loss']
        held[variant, seed] = last['val_loss']
        if 'test_accuracy' in last:
          accuracy[variant, seed] = last['test_accuracy']
        if seed == 0:
          per_param[variant] = _bytes_per_param(
              config, task, task.data_spec(dataset))
        print(f'{which} seed {seed} {variant:12s} f(θ) '
              f'{finals[variant, seed]:.4e} held-out '
              f'{held[variant, seed]:.4f}', flush=True)

  seeds = range(args.seeds)
  ref = [finals['fp32', s] for s in seeds]
  lo, hi = min(ref), max(ref)
  summary = []
  for variant in variants:
    values = [finals[variant, s] for s in seeds]
    median = statistics.median(values)
    inside = sum(lo <= v <= hi for v in values)
    row = [variant, DESCRIPTION[variant], f'{per_param[variant]:.3f}',
           _range(values), _range([held[variant, s] for s in seeds])]
    if accuracy:
      row.append(_range([100 * accuracy[variant, s] for s in seeds],
                        '.2f'))
    row += ['(ref)' if variant == 'fp32' else
            ('yes' if lo <= median <= hi else 'no'),
            f'{inside}/{len(values)}',
            f'{statistics.median(seconds[variant]):.0f}']
    summary.append(row)
  six = ''
  if '6-byte' in variants:
    median = statistics.median(finals['6-byte', s] for s in seeds)
    verdict = 'within' if lo <= median <= hi else 'outside'
    six = (f'The 6-byte setting\'s median final f(θ), {median:.4g}, is '
           f'**{verdict}** fp32\'s range over the seeds, [{lo:.4g}, '
           f'{hi:.4g}].')
  held_name = 'test loss' if accuracy else 'validation loss'
  header = ['setting', 'what', 'bytes / param (params + state)',
            'final f(θ): median [min, max]',
            f'final {held_name}: median [min, max]']
  if accuracy:
    header.append('test accuracy %: median [min, max]')
  header += ['median f(θ) within fp32\'s range', 'seeds within fp32\'s range',
             'median s / run']
  per_seed = [[str(s)] + [f'{finals[v, s]:.4e}' for v in variants]
              for s in seeds]
  length = (f'{base.num_epochs} epochs' if base.num_epochs
            else f'{base.num_steps} steps')
  return [f'### `{CONFIGS[which].relative_to(ROOT)}`: {base.model.name} on '
          f'{base.data.name}, {length}, Lion lr {lr:g}, weight decay '
          f'{base.optimizer.weight_decay}, {base.schedule.name} schedule, '
          f'{args.seeds} seeds', '',
          *_common.table(header, summary), '', six, '',
          'Final f(θ) per seed:', '',
          *_common.table(['seed', *variants], per_seed), '']


def main(args: argparse.Namespace) -> None:
  from lionx.train import optimizers  # pylint: disable=g-import-not-at-top
  _register_rows(optimizers)
  fo = flashoptim()
  command = (f'python benchmarks/momentum_dtype.py --configs '
             f'{",".join(args.configs)} --variants {",".join(args.variants)}'
             f' --seeds {args.seeds}'
             + (f' --epochs {args.epochs}' if args.epochs else '')
             + (f' --steps {args.steps}' if args.steps else ''))
  lines = ['## momentum_dtype.py: Lion\'s state in fewer bytes, over seeds',
           '', *_common.machine(), f'- command: `{command}`',
           '- flashoptim-jax: ' + ('not installed' if fo is None else
                                   f'{_version("flashoptim-jax")} from '
                                   'PyPI' + ('' if jax.default_backend() ==
                                             'gpu' else ', unfused')),
           '- f(θ) is the full training loss of the logging pass after the '
           'last step; a seed fixes the initialisation and the data order, '
           'so within a seed the settings differ only in how the optimizer '
           'stores its state. "bytes / param" counts the parameters and the '
           'optimizer state (not the gradient).', '']
  print('\n'.join(lines), flush=True)
  for which in args.configs:
    section = run_config(which, args)
    print('\n'.join(section), flush=True)
    lines += section
  if args.write:
    _common.write_section(SCRIPT, lines)


if __name__ == '__main__':
  main(_args())
