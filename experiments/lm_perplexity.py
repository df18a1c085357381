r"""Table B.1 of Dong, Li, Lin on the embedded byte corpus: Lion vs SGD.

The paper gives the zero-shot log-perplexity of GPT-2 Small and Medium on
WikiText-103 after 10k, 20k, ..., 50k steps of training on OpenWebText:
SGD goes from 8.202 to 7.887 (Small) and from 8.029 to 7.712 (Medium),
Lion from 3.659 to 3.284 and from 3.221 to 2.876. Lion is far below SGD
from the first checkpoint on.

Here: ``configs/lm_default.py`` (a 2-block GPT on the bytes of the standard
library) with Lion and SGD at the config's rates, each over several seeds;
the log-perplexity is the validation loss in nats per byte, read at 5
evenly spaced checkpoints (the evaluations of the runs). Its exp is the
perplexity per byte. With ``--optimizers lion,sgd,adamw`` AdamW is shown
too.

Default (the config's 1000 steps, seeds 0, 1, 2; about 6 minutes of CPU
time)::

  python -m experiments.lm_perplexity --out results/lm_perplexity
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
from typing import Any, Optional, Sequence

import numpy as np

import lionx.train as lt
from experiments import _common
from experiments import _lm

OPTIMIZERS = ('lion', 'sgd')
SEEDS = (0, 1, 2)
CHECKPOINTS = 5
NAMES = ('lm_perplexity.png', 'lm_perplexity.md', 'lm_perplexity.json')
# Table B.1 (log-perplexity on WikiText-103, 10k ... 50k steps), ends only.
PAPER = {'GPT-2 Small': {'sgd': (8.202, 7.887), 'lion': (3.659, 3.284)},
         'GPT-2 Medium': {'sgd': (8.029, 7.712), 'lion': (3.221, 2.876)}}


@dataclasses.dataclass
class Result:
  """The runs by (optimizer, seed), and the settings."""

  runs: dict[tuple[str, int], _lm.Run]
  checkpoints: tuple[int, ...]
  seeds: tuple[int, ...]
  optimizers: tuple[str, ...]
  settings: dict[str, Any]

  def values(self, name: str, step: int) -> list[float]:
    """The log-perplexity (val_loss) at ``step``, one per seed."""
    return [self.runs[name, s].at(step, 'val_loss') for s in self.seeds]

  def rows(self) -> list[dict[str, Any]]:
    out = []
    for step in self.checkpoints:
      row: dict[str, Any] = {'step': step}
      for name in self.optimizers:
        values = self.values(name, step)
        row[f'{name} log-ppl'] = _lm.spread(values)
        row[f'{name} ppl'] = f'{math.exp(_lm.median(values)):.3g}' if (
            math.isfinite(_lm.median(values))) else 'diverged'
      if {'lion', 'sgd'} <= set(self.optimizers):
        gaps = [s - l for s, l in zip(self.values('sgd', step),
                                      self.values('lion', step))]
        row['SGD - Lion'] = _lm.spread(gaps, 3)
      out.append(row)
    return out

  def lion_below_sgd(self) -> tuple[int, int]:
    """(checkpoint-seed pairs where Lion < SGD, pairs)."""
    pairs = [(l, s) for step in self.checkpoints
             for l, s in zip(self.values('lion', step),
                             self.values('sgd', step))]
    return sum(l < s or (math.isfinite(l) and not math.isfinite(s))
               for l, s in pairs), len(pairs)

  def summary(self) -> dict[str, Any]:
    return {'settings': self.settings, 'paper': PAPER,
            'val_loss': {f'{n}/{s}': {str(c): run.at(c, 'val_loss')
                                      for c in self.checkpoints}
                         for (n, s), run in self.runs.items()},
            'status': {f'{n}/{s}': run.status
                       for (n, s), run in self.runs.items()}}


def run(config: str = _lm.DEFAULT_CONFIG, out: str | pathlib.Path = '.', *,
        seeds: Sequence[int] = SEEDS, optimizers: Sequence[str] = OPTIMIZERS,
        steps: Optional[int] = None, overrides: Sequence[str] = (),
        overwrite: bool = False,
        verbose: bool = True) -> Result:
  """Trains every (optimizer, seed) under ``out/runs``; 5 evaluations.

  The arguments not listed are :mod:`experiments._lm`'s.

  Args:
    seeds: the seeds of each optimizer.
    optimizers: the harness's optimizer names, at the config's rates.
    steps: ``num_steps`` (default: the config's); evaluated at 5 evenly
      spaced checkpoints.

  Returns:
    A :class:`Result`.
  """
  if not seeds or any(s < 0 for s in seeds):
    raise ValueError(f'seeds={tuple(seeds)}: expected non-negative '
                     'integers.')
  if not optimizers:
    raise ValueError('optimizers=(): expected at least one name.')
  if steps is None:
    steps = _lm.load_config(config, tuple(overrides)).num_steps
  timing = _lm.steps_overrides(steps, CHECKPOINTS)
  runs = {}
  data = None
  for name in optimizers:
    for seed in seeds:
      cfg = _lm.load_config(config, tuple(overrides) + timing + (
          f'optimizer.name={name}', f'seed={seed}'))
      if data is None:
        data = lt.get_task(cfg.task).load_data(cfg)
      path = pathlib.Path(out) / 'runs' / f'{name}_seed{seed}'
      runs[name, seed] = one = _lm.train(cfg, path, overwrite=overwrite,
                                         data=data)
      if verbose:
        print(f'{name} seed {seed}: {one.status}, final log-perplexity '
              f'{one.final("val_loss"):.4f} ({one.seconds:.0f} s)',
              flush=True)
  checkpoints = tuple(steps // CHECKPOINTS * (i + 1)
                      for i in range(CHECKPOINTS))
  settings = dict(config=_common.shown(config), overrides=list(overrides),
                  seeds=list(seeds),
                  optimizers=list(optimizers), steps=steps,
                  checkpoints=list(checkpoints))
  return Result(runs, checkpoints, tuple(seeds), tuple(optimizers),
                settings)


def plot(result: Result):
  """Log-perplexity at the checkpoints, every seed and the median."""
  fig = _common.figure(figsize=(6.5, 4.3), layout='constrained')
  ax = fig.subplots()
  steps = np.array(result.checkpoints)
  for i, name in enumerate(result.optimizers):
    values = np.array([result.values(name, c) for c in result.checkpoints])
    for j in range(values.shape[1]):
      ax.plot(steps, values[:, j], '-', color=f'C{i}', alpha=0.3, lw=1)
    ax.plot(steps, [_lm.median(v) for v in values], 'o-', color=f'C{i}',
            label=f'{name}: median over {len(result.seeds)} seeds (thin: '
            'each seed)')
  _lm.label(ax, 'step', 'validation log-perplexity (nats per byte)',
            'Table B.1 analogue: Lion vs SGD, byte-level GPT')
  _lm.finish([ax], 8)
  return fig


def claims(result: Result) -> list[tuple[str, str, str]]:
  if not {'lion', 'sgd'} <= set(result.optimizers):
    return []
  won, total = result.lion_below_sgd()
  first = result.checkpoints[0]
  gap_first = _lm.median([s - l for s, l in zip(
      result.values('sgd', first), result.values('lion', first))])
  last = result.checkpoints[-1]
  gap_last = _lm.median([s - l for s, l in zip(
      result.values('sgd', last), result.values('lion', last))])
  verdict = ('holds' if won == total else 'does not hold' if won == 0
             else f'holds in {won} of {total}')
  seeds = len(result.seeds)
  verdict = _lm.unlike_paper(verdict, (
      f'may differ from the paper for the reduced size: '
      f'{result.checkpoints[-1]} steps of a byte-level GPT (paper: 50,000 '
      f'of GPT-2 on OpenWebText), {seeds} seed{"s" * (seeds > 1)}'))
  # The rates are the config's, picked from configs/lm_default_grid.py.
  verdict = _lm.at_edge(verdict, _lm.default_grid_edges(
      result.settings['config'], ('lion', 'sgd')))
  paper = PAPER['GPT-2 Small']
  return [(
      'Table B.1: Lion\'s log-perplexity is far below SGD\'s from the first '
      f'checkpoint (GPT-2 Small: SGD {paper["sgd"][0]} -> '
      f'{paper["sgd"][1]}, Lion {paper["lion"][0]} -> {paper["lion"][1]}; '
      'a gap of about 4.5 nats)',
      f'Lion below SGD in {won} of {total} (checkpoint, seed) pairs; median '
      f'gap SGD - Lion {gap_first:.3f} nats at step {first} and '
      f'{gap_last:.3f} at step {last}', verdict)]


def report(result: Result) -> str:
  """A markdown report: the claim and verdict, then the table."""
  s = result.settings
  return _lm.document(
      'Table B.1 of Dong, Li, Lin on the embedded byte corpus',
      f'Config {s["config"]} at its rates, {s["steps"]} steps, seeds '
      f'{s["seeds"]}; the validation loss in nats per byte (the '
      'log-perplexity; ppl = its exp, of the median) at each checkpoint, '
      'median [min, max] over the seeds. The paper measures zero-shot '
      'perplexity on WikiText-103 in GPT-2 tokens; these are bytes of '
      'Python source, so only the comparison carries over.',
      claims(result), ('', result.rows()))


def _arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--seeds', default=','.join(map(str, SEEDS)))
  parser.add_argument('--optimizers', default=','.join(OPTIMIZERS))
  parser.add_argument('--steps', type=int, default=None,
                      help="steps per run (default: the config's)")


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: runs :func:`run`, writes a PNG, markdown and JSON."""
  return _lm.main(sys.modules[__name__], argv, _arguments, lambda args: {
      'seeds': _lm.sized(args, 'seeds', SEEDS, SEEDS),
      'optimizers': _lm.names(args.optimizers), 'steps': args.steps})

if __name__ == '__main__':
  sys.exit(main())
