"""Command line: ``lionx-train`` (one run) and ``lionx-compare``.

::

  lionx-train --config configs/default.py --workdir runs/lion [key=value ...]
  lionx-compare --config configs/default.py --workdir runs/default \\
      [--optimizers lion,sgd,adamw] [--lr-grid [paper|1e-3,3e-4,...]] \\
      [--seeds 0,1,2]
  lionx-train --config configs/cifar.py:cifar100,resnet18 --workdir w \\
      --dry-run

Overrides are ``key=value`` pairs, ``--set key=value`` or the Flax
examples' ``--config.key=value`` flags, e.g. ``optimizer.learning_rate=1e-3``
or ``num_epochs=5``; each text is read as its field's type.
``parallel.num_devices=0`` uses every device. ``--dry-run`` validates the
config, prints d and sqrt(d), reads one batch and writes nothing. Rerunning
with the same workdir resumes; a workdir with results of a different config
is refused unless ``--overwrite``; a resume on data whose fingerprint
changed is refused unless ``--allow-data-change``. ``--eval-only``
evaluates the newest checkpoint (``WORKDIR/eval/step_<k>.json``);
``--extend`` continues a run to a larger ``num_steps`` or ``num_epochs``
at its schedule's final value; ``init_from=WORKDIR`` fine-tunes from
another run's parameters. Errors are one line on stderr, exit code 2; a run
that diverged exits with 1. Set ``LIONX_DEBUG=1`` for tracebacks.

Several hosts: run the same command on every host with ``--coordinator
HOST:PORT`` (process 0's address and a free port), ``--num-processes N`` and
``--process-id I`` (0 on the coordinator's host), plus
``parallel.num_devices=0``; ``jax.distributed.initialize`` is called with
them before anything touches a device. ``--coordinator auto`` lets JAX read
them from Slurm, Open MPI or a TPU pod.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Any, Optional, Sequence

EXIT_ERROR, EXIT_DIVERGED = 2, 1


def _parser(prog: str, compare: bool) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog=prog, description=(
          'Compare optimizers on one config: trains each into '
          'WORKDIR/<optimizer>, then writes figures and a summary.'
          if compare else 'Train one run of a lionx config.'))
  parser.add_argument('--config', required=True,
                      help='a Python file with get_config(), e.g. '
                      'configs/default.py, or FILE:ARG for get_config(ARG)')
  parser.add_argument('--workdir', required=True,
                      help='where results and checkpoints go')
  parser.add_argument('--dry-run', action='store_true',
                      help='validate the config, print d, read one batch; '
                      'write nothing')
  parser.add_argument('overrides', nargs='*', metavar='key=value',
                      help='config overrides, e.g. optimizer.learning_rate='
                      '1e-3')
  parser.add_argument('--set', action='append', default=[],
                      metavar='key=value', help='a config override')
  parser.add_argument(
      '--optimizers', default=None,
      help='comma-separated optimizer names (default for lionx-compare: '
      "the config's compare_optimizers)")
  parser.add_argument(
      '--lr-grid', nargs='?', const='paper', default=None,
      help="train every rate and keep the best: 'paper' (the papers' "
      '[3e-3 ... 1e-6], the default) or a comma-separated list')
  parser.add_argument(
      '--seeds', default=None, metavar='S,S,...',
      help='train each run once per seed; the summary gives the median and '
      'range')
  parser.add_argument('--overwrite', action='store_true',
                      help='discard earlier results in the workdir')
  parser.add_argument('--no-progress', action='store_true',
                      help='no progress bar')
  parser.add_argument('--allow-data-change', action='store_true',
                      help='resume even if the data differs from that of '
                      'the checkpoint (its fingerprint)')
  if not compare:
    parser.add_argument('--eval-only', action='store_true',
                        help="evaluate the workdir's newest checkpoint; "
                        'write WORKDIR/eval/step_<k>.json, train nothing')
    parser.add_argument('--extend', action='store_true',
                        help='continue a run to a larger num_steps or '
                        "num_epochs; its schedule keeps its final value")
  hosts = parser.add_argument_group(
      'several hosts', 'arguments of jax.distributed.initialize, called '
      'before any device is used')
  hosts.add_argument('--coordinator', default=None, metavar='HOST:PORT',
                     help="process 0's address and a free port, the same "
                     "on every host ('auto': detected by JAX on Slurm, "
                     'Open MPI or TPU pods)')
  hosts.add_argument('--num-processes', type=int, default=None,
                     metavar='N', help='the number of processes (hosts)')
  hosts.add_argument('--process-id', type=int, default=None, metavar='I',
                     help='this process: 0 .. N-1, 0 on the coordinator')
  return parser


def _initialize_distributed(args: argparse.Namespace) -> None:
  """Calls ``jax.distributed.initialize`` if ``--coordinator`` is given."""
  from lionx.train.config import ConfigError
  given = {'--num-processes': args.num_processes,
           '--process-id': args.process_id}
  if args.coordinator is None:
    extra = [f'{k} {v}' for k, v in given.items() if v is not None]
    if extra:
      raise ConfigError(
          f'{" ".join(extra)} without --coordinator: expected '
          '--coordinator HOST:PORT as well (or auto).')
    return
  n, i = args.num_processes, args.process_id
  if n is not None and n < 1:
    raise ConfigError(f'--num-processes {n}: expected a number >= 1.')
  if i is not None and (i < 0 or (n is not None and i >= n)):
    raise ConfigError(
        f'--process-id {i}: expected 0 <= id < --num-processes ({n}).')
  auto = args.coordinator == 'auto'
  if not auto and (n is None or i is None):
    raise ConfigError(
        f'--coordinator {args.coordinator}: expected --num-processes and '
        '--process-id as well (or --coordinator auto on Slurm, Open MPI '
        'or TPU pods).')
  import jax
  jax.distributed.initialize(
      coordinator_address=None if auto else args.coordinator,
      num_processes=n, process_id=i)


def _lr_grid(text: str) -> tuple[float, ...]:
  from lionx.train.config import PAPER_LR_GRID, ConfigError
  if text == 'paper':
    return PAPER_LR_GRID
  try:
    return tuple(float(v) for v in text.split(',') if v.strip())
  except ValueError:
    raise ConfigError(
        f'--lr-grid {text}: expected paper or comma-separated numbers.'
    ) from None


_FLAG = '--config.'


def _flag_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Splits the Flax examples' ``--config.key=value`` flags from argv."""
  rest, overrides = [], []
  items = iter(argv)
  for item in items:
    if item.startswith(_FLAG):
      text = item[len(_FLAG):]
      if '=' not in text:
        text = f'{text}={next(items, "")}'
      overrides.append(text)
    else:
      rest.append(item)
  return rest, overrides


def _main(argv: Optional[Sequence[str]], prog: str, compare: bool) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  argv, flags = _flag_overrides(argv)
  args = _parser(prog, compare).parse_intermixed_args(argv)
  _initialize_distributed(args)  # before anything touches a device
  # Heavy imports after argument parsing, so --help is instant.
  from lionx.train import config as config_lib
  from lionx.train import experiment, sweep

  overrides = tuple(args.set) + tuple(args.overrides) + tuple(flags)
  if args.lr_grid is not None:
    grid = ','.join(repr(v) for v in _lr_grid(args.lr_grid))
    overrides += (f'optimizer.lr_grid={grid}',)
  if args.seeds is not None:
    overrides += (f'seeds={args.seeds}',)
  if args.no_progress:
    overrides += ('progress=false',)
  config = config_lib.load_config(args.config, overrides)
  if args.dry_run:
    experiment.dry_run(config)
    return 0
  workdir = pathlib.Path(args.workdir)
  names = [n.strip() for n in (args.optimizers or '').split(',')
           if n.strip()]
  extend = getattr(args, 'extend', False)
  if getattr(args, 'eval_only', False):
    _one_run('--eval-only', config, names, args.overwrite or extend)
    experiment.evaluate_checkpoint(
        config, workdir, allow_data_change=args.allow_data_change)
    return 0
  if extend:
    _one_run('--extend', config, names, args.overwrite, seeds=True)
  if compare or names:
    results = sweep.compare(config, workdir, names or None,
                            overwrite=args.overwrite,
                            allow_data_change=args.allow_data_change)
    statuses = [r.status for s in results.values() for r in s.seeds]
  else:
    result = sweep.run(config, workdir, overwrite=args.overwrite,
                       extend=extend,
                       allow_data_change=args.allow_data_change)
    statuses = [r.status for r in result.seeds]
    for r in result.seeds:
      if r.status == 'diverged':
        print(f'{prog}: {r.message}', file=sys.stderr)
  return EXIT_DIVERGED if 'diverged' in statuses else 0


def _one_run(flag: str, config: Any, names: list[str], conflict: bool,
             seeds: bool = False) -> None:
  """Refuses ``flag`` where it does not apply: a grid, several optimizers
  (or seeds, unless ``seeds``), --overwrite."""
  what = ('--optimizers' if names else
          '--lr-grid' if config.optimizer.lr_grid else
          None if seeds or not config.seeds else '--seeds')
  if what:
    raise ValueError(f'{flag} works on one run; not with {what} (give the '
                     'workdir of one run, e.g. WORKDIR/seed_S with seed=S).')
  if conflict:
    raise ValueError(f'{flag} keeps what the workdir holds; not with '
                     '--overwrite' + (' or --extend' if flag == '--eval-only'
                                      else '') + '.')


def _guarded(argv: Optional[Sequence[str]], prog: str, compare: bool) -> int:
  if os.environ.get('LIONX_DEBUG'):
    return _main(argv, prog, compare)
  try:
    return _main(argv, prog, compare)
  except KeyboardInterrupt:
    print(f'{prog}: interrupted; rerun the same command to resume.',
          file=sys.stderr)
    return 130
  except (ValueError, TypeError, OSError) as err:
    message = ' '.join(str(err).split())
    print(f'{prog}: error: {message}', file=sys.stderr)
    return EXIT_ERROR


def train_main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of ``lionx-train``."""
  return _guarded(argv, 'lionx-train', compare=False)


def compare_main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of ``lionx-compare``."""
  return _guarded(argv, 'lionx-compare', compare=True)


if __name__ == '__main__':
  sys.exit(train_main())
