r"""Beyond the seeds: Lion, Lion-ℓ2, spectral Lion, cautious weight decay, Muon.

Two results since the seed papers fit Lion-K (Chen, Liu, Liang, Liu 2023):
Muon is Lion-K with the nuclear norm (arXiv 2506.15054), whose reshaper
:func:`lionx.spectral_reshaper` keeps :math:`\sigma_{\max}(\lambda\theta)
\le 1` per matrix, and cautious weight decay (Chen et al. 2025, arXiv
2510.12402) decays only where the step agrees, keeping no constraint at all
(its authors report a lower final loss for AdamW, Lion and Muon). This
command trains, on one harness config (by default the embedded digits),

* ``lion`` (sign: the box :math:`\lambda\|\theta\|_\infty \le 1`),
* ``lion_lp`` with :math:`p = 2` over the whole model (the ball
  :math:`\|\lambda\theta\|_2 \le 1`),
* ``lion_spectral`` (the spectral-norm ball per matrix),
* ``lion_cwd`` (Lion with cautious weight decay: no constraint),
* ``muon`` (``optax.contrib.muon``) and ``adamw``,

each at the best rate of a grid (lowest final :math:`f(\theta)` for the
first seed; the papers' criterion), then over several seeds at that rate.
It reports the final training loss :math:`f(\theta)` and held-out loss
(median and range over the seeds), the constraint each reshaper keeps over
training (the harness's ``constraint`` column), and the time of one
training step of the harness's loop (median over ``--rounds`` steps of a
short run per optimizer, measured by a hook, all in one process). Every
run, the timed ones too, is one :func:`lionx.train.train_and_evaluate`
(through :func:`lionx.train.compare` for the grid and the seeds).
Every number of the verdict is computed from the table, and the files are
never overwritten without ``--overwrite``.

Command (digits: about 15 minutes on 2 CPU cores; the language-model
default with ``--config configs/lm_default.py``)::

  python -m experiments.lion_k_frontier --out results/frontier
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np
from flax import nnx

import lionx.train as lt
from experiments import _common
from experiments import _networks

OPTIMIZERS = ('lion', 'lion_lp', 'lion_spectral', 'lion_cwd', 'muon',
              'adamw')
GRID = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4)
FILES = ('frontier.png', 'frontier.md', 'frontier.json')


@dataclasses.dataclass
class Frontier:
  """What :func:`run` measured."""

  title: str
  rates: dict[str, float]  # the kept rate of each optimizer
  grid: dict[str, dict[float, float]]  # name -> rate -> final f (seed 0)
  rows: dict[str, list[list[dict[str, Any]]]]  # name -> seed -> rows
  step_ms: dict[str, float]  # median ms per training step

  def finals(self, name: str, key: str) -> list[float]:
    return [runs[-1][key] for runs in self.rows[name]]

  def summary(self) -> dict[str, Any]:
    """Everything measured, JSON-ready (:meth:`from_summary` reads it)."""
    out = {}
    for name in self.rows:
      out[name] = {
          'learning_rate': self.rates[name], 'step_ms': self.step_ms[name],
          **{key: self.finals(name, key)
             for key in ('full_loss', 'val_loss', 'constraint',
                         'box_linf_scaled')},
          'rows': self.rows[name]}
    return {'title': self.title, 'grid': {
        n: {f'{k:g}': v for k, v in g.items()} for n, g in self.grid.items()},
            'optimizers': out}

  @classmethod
  def from_summary(cls, summary: dict[str, Any]) -> 'Frontier':
    opts = summary['optimizers']
    return cls(summary['title'],
               {n: o['learning_rate'] for n, o in opts.items()},
               {n: {float(k): v for k, v in g.items()}
                for n, g in summary['grid'].items()},
               {n: o['rows'] for n, o in opts.items()},
               {n: o['step_ms'] for n, o in opts.items()})


def _grids(config: lt.Config, names: Sequence[str], grid: Sequence[float],
           workdir: pathlib.Path, data: Any) -> dict[str, dict[float, float]]:
  """name -> rate -> final f(theta) of the first seed (NaN: diverged)."""
  sub = lt.copy(config)
  sub.optimizer.lr_grid = tuple(grid)
  sub.seeds = ()
  results = lt.compare(sub, workdir / 'grid', list(names), data=data,
                       verbose=False)
  return {name: {runs[0].learning_rate: (
      runs[0].rows[-1]['full_loss'] if runs[0].status == 'finished'
      and runs[0].rows else float('nan')) for runs in result.grid}
          for name, result in results.items()}


class _StepTimer(lt.Hook):
  """Seconds from the end of one training step to the end of the next
  (the step waited for), the first (compiling) step left out."""

  def __init__(self):
    self.seconds, self.last = [], None

  def after_step(self, step: int, state: Any) -> None:
    jax.block_until_ready(nnx.state(state.model, nnx.Param))
    now = time.perf_counter()
    if self.last is not None:
      self.seconds.append(now - self.last)
    self.last = now


def _step_ms(config: lt.Config, names: Sequence[str],
             rates: dict[str, float], data: Any, rounds: int
             ) -> dict[str, float]:
  """Median ms of one training step of the harness's loop: a run of
  ``rounds + 1`` steps per optimizer (in a temporary workdir, so that it
  always trains), one evaluation at its end."""
  out = {}
  for name in names:
    sub = lt.copy(config)
    sub.optimizer.name, sub.optimizer.learning_rate = name, rates[name]
    sub.parallel.num_devices = 1
    sub.num_epochs, sub.num_steps = 0, rounds + 1
    sub.eval_every_steps, sub.logging_max_batches = rounds + 1, 1
    sub.seeds, sub.optimizer.lr_grid = (), ()
    timer = _StepTimer()
    with tempfile.TemporaryDirectory(prefix='lionx-timing-') as workdir:
      lt.train_and_evaluate(sub, workdir, data=data, verbose=False,
                            hooks=[timer])
    out[name] = 1e3 * statistics.median(timer.seconds)
  return out


def run(config: lt.Config, *,
        optimizers: Sequence[str] = OPTIMIZERS,
        grid: Sequence[float] = GRID, seeds: Sequence[int] = (0, 1, 2),
        rates: Optional[dict[str, float]] = None,
        rounds: int = 20, workdir: Optional[pathlib.Path] = None,
        verbose: bool = False) -> Frontier:
  """Grid (first seed), then every seed at the kept rate, then step times.

  Args:
    config: a harness config (its optimizer section's name is replaced).
    optimizers: harness optimizer names.
    grid: learning rates tried with the first seed.
    rates: name -> rate to use instead of a grid (e.g. the rates an earlier
      full run selected).
    seeds: the seeds of the final comparison (>= 1).
    rounds: timed steps per optimizer.
    workdir: where the runs go (default: a temporary folder).
    verbose: print each run's lines.

  Returns:
    A :class:`Frontier`.
  """
  config = lt.validate(config)
  if not seeds:
    raise ValueError('seeds=(): expected at least one seed.')
  if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
    raise ValueError(f'rounds={rounds!r}: expected a positive int.')
  for name in rates or {}:
    if name not in optimizers:
      raise ValueError(f'rates names {name!r}, which is not among '
                       f'optimizers={tuple(optimizers)}.')
  data = lt.get_task(config.task).load_data(config)
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(workdir or tmp)
    rates = dict(rates or {})
    searched = [name for name in optimizers if name not in rates]
    grids = _grids(config, searched, grid, root, data) if searched else {}
    for name in searched:
      scored = {r: f for r, f in grids[name].items() if np.isfinite(f)}
      if not scored:
        raise RuntimeError(f'{name}: every rate of {tuple(grid)} diverged.')
      rates[name] = min(scored, key=scored.get)
      if verbose:
        print(f'{name}: rate {rates[name]:g} of {grids[name]}', flush=True)
    final = lt.copy(config)
    final.optimizer.learning_rate = None
    final.optimizer.learning_rates = dict(rates)
    final.seeds = tuple(seeds)
    results = lt.compare(final, root / 'compare', list(optimizers),
                         data=data, verbose=verbose)
  step_ms = _step_ms(config, optimizers, rates, data, rounds)
  rows = {name: [r.rows for r in results[name].seeds] for name in optimizers}
  title = (f'{config.model.name} on {config.data.name}, weight decay '
           f'{config.optimizer.weight_decay:g}, seeds {list(seeds)}')
  return Frontier(title, rates, grids, rows, step_ms)


def _spread(values: Sequence[float]) -> str:
  values = [v for v in values if np.isfinite(v)]
  if not values:
    return 'n/a'
  med = statistics.median(values)
  if len(values) == 1:
    return f'{med:.3g}'
  return f'{med:.3g} [{min(values):.3g}, {max(values):.3g}]'


def _optimizer(name: str) -> lt.Optimizer:
  config = lt.Config()
  config.optimizer.name, config.optimizer.learning_rate = name, 1.0
  return lt.make_optimizer(config, 1)


def _lion_k(name: str) -> bool:
  """Whether ``name`` is a Lion-K optimizer whose decay keeps a set."""
  built = _optimizer(name)
  return built.row.box and built.reshaper() is not None


def _constraint_cell(frontier: Frontier, name: str) -> str:
  if not _optimizer(name).row.box:
    return 'none (cautious decay keeps no set)'
  if not _lion_k(name):
    return 'n/a (not Lion-K)'
  return _spread(frontier.finals(name, 'constraint'))


def table(frontier: Frontier) -> list[dict[str, Any]]:
  """One row per optimizer (medians and ranges over the seeds)."""
  return [{
      'optimizer': name, 'rate': frontier.rates[name],
      'final f(θ)': _spread(frontier.finals(name, 'full_loss')),
      'final held-out loss': _spread(frontier.finals(name, 'val_loss')),
      'final constraint': _constraint_cell(frontier, name),
      'ms / step': round(frontier.step_ms[name], 2)}
          for name in frontier.rows]


def verdict(frontier: Frontier) -> str:
  """Statements computed from the table (medians over the seeds)."""
  med = {n: statistics.median(frontier.finals(n, 'full_loss'))
         for n in frontier.rows}
  val = {n: statistics.median(frontier.finals(n, 'val_loss'))
         for n in frontier.rows}
  lines = [f'- Lowest final f(θ): {min(med, key=med.get)}; lowest held-out '
           f'loss: {min(val, key=val.get)} (medians over the seeds).']
  for a, b in (('lion_cwd', 'lion'), ('lion_spectral', 'muon'),
               ('lion_spectral', 'lion'), ('lion_lp', 'lion')):
    if a in med and b in med:
      lo, hi = (min(frontier.finals(a, 'full_loss')),
                max(frontier.finals(a, 'full_loss')))
      other = frontier.finals(b, 'full_loss')
      overlap = lo <= max(other) and min(other) <= hi
      lines.append(
          f'- {a} vs {b}: median final f(θ) {med[a]:.3g} vs {med[b]:.3g}, '
          f'held-out {val[a]:.3g} vs {val[b]:.3g}; the f(θ) ranges '
          f'{"overlap" if overlap else "do not overlap"}.')
  for name in filter(_lion_k, frontier.rows):
    first = [rows[0]['constraint'] for rows in frontier.rows[name]]
    last = [rows[-1]['constraint'] for rows in frontier.rows[name]]
    feasible = [rows for rows in frontier.rows[name]
                if rows[0]['constraint'] <= 1 + 1e-5]
    stayed = all(r['constraint'] <= 1 + 1e-5 for rows in feasible
                 for r in rows)
    lines.append(
        f'- {name}: its constraint went from {_spread(first)} at the first '
        f'evaluation to {_spread(last)} at the last; '
        + (f'the runs inside their set at the first evaluation stayed inside: '
           f'{"yes" if stayed else "no"}.' if feasible else
           'no run was inside its set at the first evaluation (the '
           'initialisation lies outside; the theory has the excess shrink).'))
  return '\n'.join(lines)


def report(frontier: Frontier) -> str:
  """The markdown report: the table, the grid, the verdict."""
  text = (f'# Lion-K frontier: {frontier.title}\n\n'
          + _common.markdown_table(table(frontier))
          + '\n## Verdict (computed from the table)\n\n'
          + verdict(frontier) + '\n')
  grid_rows = [{'optimizer': n, **{f'{r:g}': f for r, f in g.items()}}
               for n, g in frontier.grid.items()]
  given = [f'{n} {frontier.rates[n]:g}' for n in frontier.rows
           if n not in frontier.grid]
  if grid_rows:
    text += ('\n## Grid: final f(θ) of the first seed per rate\n\n'
             + _common.markdown_table(grid_rows))
  if given:
    text += ('\nRates given, not searched (--rates): '
             + ', '.join(given) + '.\n')
  return text


def plot(frontier: Frontier):
  """Loss over training (first seed), the constraint over training, and
  the final held-out loss over the seeds."""
  fig = _common.figure(figsize=(16, 4.4), layout='constrained')
  loss, held, cons, final = fig.subplots(1, 4)
  x = 'epoch' if 'epoch' in next(iter(frontier.rows.values()))[0][0] else (
      'step')
  for i, (name, seeds) in enumerate(frontier.rows.items()):
    color = f'C{i}'
    rows = seeds[0]
    xs = [r[x] for r in rows]
    loss.plot(xs, [r['full_loss'] for r in rows], color=color, label=name)
    held.plot(xs, [r['val_loss'] for r in rows], color=color, label=name)
    if _lion_k(name):
      cons.plot(xs, [r['constraint'] for r in rows], color=color,
                label=name)
    values = frontier.finals(name, 'val_loss')
    final.errorbar([i], [statistics.median(values)],
                   yerr=[[statistics.median(values) - min(values)],
                         [max(values) - statistics.median(values)]],
                   fmt='o', color=color)
  loss.set_yscale('log')
  loss.set_title('f(θ) (first seed)')
  held.set_title('held-out loss (first seed)')
  cons.axhline(1.0, color='black', linestyle='--', linewidth=1)
  cons.set_title("each Lion-K reshaper's constraint (≤ 1)")
  final.set_xticks(range(len(frontier.rows)), list(frontier.rows),
                   rotation=30)
  if all(min(frontier.finals(n, 'val_loss')) > 0 for n in frontier.rows):
    held.set_yscale('log')  # one overfitting row would flatten the rest
    final.set_yscale('log')
  final.set_title('final held-out loss: median, range')
  for ax in (loss, held, cons):
    ax.set_xlabel(x)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.suptitle(frontier.title)
  return fig


def parse_rates(text: str) -> dict[str, float]:
  """``'lion=1e-3,adamw=3e-3'`` -> a dict; a one-line error otherwise."""
  rates = {}
  for item in filter(None, (x.strip() for x in text.split(','))):
    name, _, value = item.partition('=')
    try:
      rate = float(value)
    except ValueError:
      rate = float('nan')
    if not name or not rate > 0 or rate == float('inf'):
      raise ValueError(f'--rates={text!r}: expected NAME=RATE pairs with '
                       'positive finite rates, e.g. lion=1e-3,adamw=3e-3.')
    rates[name.strip()] = rate
  return rates


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: runs :func:`run`, writes the PNG, markdown and JSON."""
  parser = _common.parser('lion_k_frontier', __doc__)
  parser.add_argument('--out', required=True, type=pathlib.Path)
  parser.add_argument('--config', default=None,
                      help="a harness config FILE[:ARG] (default: the "
                      "repository's configs/default.py, the digits CNN)")
  parser.add_argument('overrides', nargs='*', metavar='key=value')
  parser.add_argument('--optimizers', default=','.join(OPTIMIZERS))
  parser.add_argument('--grid', default=','.join(f'{r:g}' for r in GRID))
  parser.add_argument('--rates', default='',
                      help='NAME=RATE,... : these optimizers skip the grid '
                      'and run at RATE (e.g. the rates of an earlier run)')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--rounds', type=int, default=20,
                      help='timed steps per optimizer')
  parser.add_argument('--overwrite', action='store_true')
  parser.add_argument('--replot', action='store_true',
                      help="redraw the PNG and markdown from --out's "
                      'frontier.json (no training; replaces those two)')
  args = parser.parse_args(argv)
  if args.replot:
    js = args.out / FILES[2]
    if not js.exists():
      raise FileNotFoundError(f'--replot: no {js}; run without --replot '
                              'first.')
    frontier = Frontier.from_summary(json.loads(js.read_text()))
    png, md = args.out / FILES[0], args.out / FILES[1]
  else:
    png, md, js = _common.check_outputs(args.out, list(FILES),
                                        args.overwrite)
    config = _networks.make_config(args.config, args.overrides)
    frontier = run(
        config, optimizers=[n.strip() for n in args.optimizers.split(',')],
        grid=_networks.parse_numbers('--grid', args.grid),
        seeds=_networks.parse_numbers('--seeds', args.seeds, int),
        rates=parse_rates(args.rates), rounds=args.rounds, verbose=True)
    js.write_text(json.dumps(frontier.summary(), indent=1))
  plot(frontier).savefig(png, dpi=110)
  text = report(frontier)
  md.write_text(text)
  print(text)
  print(f'wrote {png}, {md}, {js}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
