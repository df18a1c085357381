r"""Figures 2 and 3 of Dong, Li, Lin on the embedded byte corpus.

The paper trains GPT-2 and BERT on OpenWebText with Lion and SGD and
plots, over training, the loss on the training set (:math:`f(\theta)` of a
logging pass over 100 batches) and on the test set (Figure 2), and the
gradient norm ratio :math:`r = \|\nabla f\|_1/\|\nabla f\|_2` of that pass
with :math:`\sqrt d` (Figure 3). Its claims: Lion's losses lie below
SGD's, and :math:`r = \Theta(\sqrt d)`, which is what makes Lion's
:math:`\ell_1` rate :math:`O(\sqrt d K^{-1/4})` comparable to SGD's
:math:`\ell_2` rate.

Here a GPT (``configs/lm_default.py``: 2 pre-LN blocks, 4 heads, context
64, bytes of the standard library) is trained at several widths, so that
:math:`d` varies within one family, with Lion, SGD and AdamW at the
config's rates (tuned at width 64 only), over several seeds. For each run
the harness logs :math:`f(\theta)`, the validation loss, :math:`r` and
:math:`\sqrt d` at every evaluation; the slope of :math:`\log r` against
:math:`\log d` over the widths is 0.5 when :math:`r/\sqrt d` is the same
at every size.

Reduced size (default; about 10 minutes of CPU time): widths 16, 32, 64,
400 steps, seeds 0 and 1. ``--full``: widths 16 to 256, 1000 steps, seeds
0, 1, 2::

  python -m experiments.lm_sqrt_d --out results/lm_sqrt_d
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

WIDTHS, FULL_WIDTHS = (16, 32, 64), (16, 32, 64, 128, 256)
SEEDS, FULL_SEEDS = (0, 1), (0, 1, 2)
STEPS, FULL_STEPS = 400, 1000
OPTIMIZERS = ('lion', 'sgd', 'adamw')
EVALS = 4
NAMES = ('lm_sqrt_d.png', 'lm_sqrt_d.md', 'lm_sqrt_d.json')


@dataclasses.dataclass
class Result:
  """The runs by (optimizer, width, seed), and the settings."""

  runs: dict[tuple[str, int, int], _lm.Run]
  widths: tuple[int, ...]
  seeds: tuple[int, ...]
  optimizers: tuple[str, ...]
  settings: dict[str, Any]

  def d(self, width: int) -> int:
    """The parameter count at ``width`` (from any of its runs)."""
    for (_, w, _), run in self.runs.items():
      if w == width and run.rows:
        return round(run.rows[0]['sqrt_d'] ** 2)
    raise ValueError(f'width {width}: no run logged anything.')

  def finals(self, name: str, width: int, key: str) -> list[float]:
    """``key`` at the end of each seed's run."""
    return [self.runs[name, width, s].final(key) for s in self.seeds]

  def slopes(self, name: str) -> list[float]:
    """Per seed: the slope of log r against log d over the widths."""
    x = np.log([self.d(w) for w in self.widths])
    out = []
    for s in self.seeds:
      r = np.array([self.runs[name, w, s].final('grad_norm_ratio')
                    for w in self.widths])
      out.append(float(np.polyfit(x, np.log(r), 1)[0])
                 if len(x) > 1 and np.all(np.isfinite(r)) else math.nan)
    return out

  def wins(self, key: str, winner: str = 'lion',
           loser: str = 'sgd') -> tuple[int, int]:
    """(pairs where ``winner``'s final ``key`` < ``loser``'s, pairs)."""
    pairs = [(self.runs[winner, w, s].final(key),
              self.runs[loser, w, s].final(key))
             for w in self.widths for s in self.seeds]
    return sum(a < b or (math.isfinite(a) and not math.isfinite(b))
               for a, b in pairs), len(pairs)

  def rows(self) -> list[dict[str, Any]]:
    out = []
    for name in self.optimizers:
      for w in self.widths:
        d = self.d(w)
        out.append({
            'optimizer': name, 'width': w, 'd': f'{d:,}',
            'sqrt_d': round(math.sqrt(d), 1),
            'final f(θ)': _lm.spread(self.finals(name, w, 'full_loss')),
            'final val loss': _lm.spread(self.finals(name, w, 'val_loss')),
            'final r': _lm.spread(self.finals(name, w, 'grad_norm_ratio')),
            'final r/√d': _lm.spread(
                self.finals(name, w, 'grad_norm_ratio_over_sqrt_d'), 3),
        })
    return out

  def summary(self) -> dict[str, Any]:
    out = {'settings': self.settings,
           'd': {str(w): self.d(w) for w in self.widths},
           'slopes': {n: self.slopes(n) for n in self.optimizers},
           'final': {f'{n}/{w}/{s}': {k: run.final(k) for k in (
               'full_loss', 'val_loss', 'grad_norm_ratio',
               'grad_norm_ratio_over_sqrt_d')} | {'status': run.status}
                     for (n, w, s), run in self.runs.items()}}
    if {'lion', 'sgd'} <= set(self.optimizers):
      out['lion_below_sgd'] = {k: list(self.wins(k))
                               for k in ('full_loss', 'val_loss')}
    return out


def run(config: str = _lm.DEFAULT_CONFIG, out: str | pathlib.Path = '.', *,
        widths: Sequence[int] = WIDTHS, seeds: Sequence[int] = SEEDS,
        optimizers: Sequence[str] = OPTIMIZERS, steps: int = STEPS,
        evals: int = EVALS, overrides: Sequence[str] = (),
        overwrite: bool = False,
        verbose: bool = True) -> Result:
  """Trains every (optimizer, width, seed) under ``out/runs`` (with
  ``config``, ``overrides``, ... as :mod:`experiments._lm` says).

  Args:
    widths: ``model.width`` of each size (heads: 4).
    seeds: the seeds of each (optimizer, width).
    optimizers: the harness's optimizer names, at the config's rates.
    steps: ``num_steps`` of each run.
    evals: evaluations per run (``eval_every_steps = steps / evals``).

  Returns:
    A :class:`Result`.
  """
  for name, values in (('widths', widths), ('seeds', seeds)):
    if not values or any(v < 0 for v in values):
      raise ValueError(f'{name}={tuple(values)}: expected non-negative '
                       'integers.')
  if any(w % 4 for w in widths):
    raise ValueError(f'widths={tuple(widths)}: expected multiples of 4 '
                     '(the model has 4 heads).')
  if not optimizers:
    raise ValueError('optimizers=(): expected at least one name.')
  timing = _lm.steps_overrides(steps, evals)
  runs = {}
  data = None
  for name in optimizers:
    for width in widths:
      for seed in seeds:
        cfg = _lm.load_config(config, tuple(overrides) + timing + (
            f'optimizer.name={name}', f'model.width={width}',
            'model.num_heads=4', f'seed={seed}'))
        if data is None:
          data = lt.get_task(cfg.task).load_data(cfg)
        path = pathlib.Path(out) / 'runs' / f'{name}_w{width}_seed{seed}'
        runs[name, width, seed] = one = _lm.train(
            cfg, path, overwrite=overwrite, data=data)
        if verbose:
          print(f'{name} width {width} seed {seed}: {one.status}, f(θ) '
                f'{one.final("full_loss"):.4f}, val '
                f'{one.final("val_loss"):.4f}, r/√d '
                f'{one.final("grad_norm_ratio_over_sqrt_d"):.3f} '
                f'({one.seconds:.0f} s)', flush=True)
  settings = dict(config=_common.shown(config), overrides=list(overrides),
                  widths=list(widths),
                  seeds=list(seeds), optimizers=list(optimizers),
                  steps=steps, evals=evals)
  return Result(runs, tuple(widths), tuple(seeds), tuple(optimizers),
                settings)


def plot(result: Result):
  """Figure 2 (losses) and Figure 3 (r against √d) analogues."""
  fig = _common.figure(figsize=(12, 8.5), layout='constrained')
  (loss, curves), (ratio, scaled) = fig.subplots(2, 2)
  ds = np.array([result.d(w) for w in result.widths])
  mid = result.widths[len(result.widths) // 2]
  seed = result.seeds[0]
  for i, name in enumerate(result.optimizers):
    color = f'C{i}'
    for key, style, label in (('full_loss', 'o-', 'f(θ) (training)'),
                              ('val_loss', 's--', 'validation')):
      values = [[result.runs[name, w, s].final(key) for s in result.seeds]
                for w in result.widths]
      med = [_lm.median(v) for v in values]
      loss.plot(ds, med, style, color=color, label=f'{name}: {label}')
    run_ = result.runs[name, mid, seed]
    curves.plot(*run_.curve('full_loss'), 'o-', color=color,
                label=f'{name}: f(θ)')
    curves.plot(*run_.curve('val_loss'), 's--', color=color,
                label=f'{name}: validation')
    for j, w in enumerate(result.widths):
      steps, r = result.runs[name, w, seed].curve('grad_norm_ratio')
      ratio.plot(steps, r, '-', color=color, alpha=0.35 + 0.65 * (j + 1)
                 / len(result.widths),
                 label=name if j == len(result.widths) - 1 else None)
    _lm.errorbar(scaled, ds, [
        result.finals(name, w, 'grad_norm_ratio_over_sqrt_d')
        for w in result.widths], 'o-', color=color,
                 label=f'{name}: median, min-max over seeds')
  for value in np.sqrt(ds):
    ratio.axhline(value, color='k', ls=':', lw=0.8)
  _lm.label(loss, 'd (parameters)', 'final loss (nats per byte)',
            'Figure 2 analogue: final losses against d\n(median over seeds)',
            xscale='log', yscale='log')
  _lm.label(curves, 'step', 'loss (nats per byte)',
            f'width {mid} (d = {result.d(mid):,}), seed {seed}',
            yscale='log')
  _lm.label(ratio, 'step', 'r = ‖∇f‖₁ / ‖∇f‖₂',
            'Figure 3 analogue: r over training (darker: wider),\n'
            f'dotted: √d of each width; seed {seed}', yscale='log')
  _lm.label(scaled, 'd (parameters)', 'final r / √d',
            'r/√d across d: flat if r = Θ(√d)', xscale='log')
  scaled.set_ylim(bottom=0)
  _lm.finish((loss, curves, ratio, scaled))
  return fig


def claims(result: Result) -> list[tuple[str, str, str]]:
  """The papers' claims beside what was measured."""
  out = []
  if {'lion', 'sgd'} <= set(result.optimizers):
    for key, what in (('full_loss', 'training loss f(θ)'),
                      ('val_loss', 'validation loss')):
      won, total = result.wins(key)
      verdict = ('holds' if won == total else 'does not hold'
                 if won == 0 else f'holds in {won} of {total}')
      out.append((f'Figure 2: Lion\'s {what} is below SGD\'s (GPT-2, BERT '
                  'on OpenWebText)',
                  f'Lion below SGD at the end in {won} of {total} (width, '
                  'seed) pairs', verdict))
  for name in result.optimizers:
    slopes = result.slopes(name)
    med = _lm.median(slopes)
    scaled = [_lm.median(result.finals(name, w,
                                       'grad_norm_ratio_over_sqrt_d'))
              for w in result.widths]
    if not math.isfinite(med):
      verdict = 'not measured (a run diverged)'
    elif abs(med - 0.5) <= 0.1:
      verdict = 'consistent'
    else:
      verdict = f'not confirmed: r grows like d^{med:.2f}'
    out.append((
        'Figure 3, §4: r = Θ(√d), i.e. r/√d about constant in d',
        f'{name}: slope of log r against log d {_lm.spread(slopes, 3)} '
        f'(median [min, max] over seeds); final r/√d from '
        f'{scaled[0]:.3f} (d = {result.d(result.widths[0]):,}) to '
        f'{scaled[-1]:.3f} (d = {result.d(result.widths[-1]):,})',
        verdict))
  return out


def report(result: Result) -> str:
  """A markdown report: the claims and verdicts, then the table."""
  s = result.settings
  return _lm.document(
      'Figures 2 and 3 of Dong, Li, Lin on the embedded byte corpus',
      f'Config {s["config"]} (its learning rates, tuned at width 64), '
      f'{s["steps"]} steps, {s["evals"]} evaluations, widths '
      f'{s["widths"]}, seeds {s["seeds"]}; every number is measured by '
      'this run.', claims(result),
      ('Final values, median [min, max] over the seeds:', result.rows()))


def _arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--widths', default=None,
                      help=f'comma-separated (default {WIDTHS})')
  parser.add_argument('--seeds', default=None,
                      help=f'comma-separated (default {SEEDS})')
  parser.add_argument('--optimizers', default=','.join(OPTIMIZERS))
  parser.add_argument('--steps', type=int, default=None,
                      help=f'steps per run (default {STEPS})')
  parser.add_argument('--evals', type=int, default=EVALS)
  parser.add_argument('--full', action='store_true',
                      help=f'widths {FULL_WIDTHS}, {FULL_STEPS} steps, '
                      f'seeds {FULL_SEEDS}')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: runs :func:`run`, writes a PNG, markdown and JSON."""
  return _lm.main(sys.modules[__name__], argv, _arguments, lambda args: {
      'widths': _lm.sized(args, 'widths', WIDTHS, FULL_WIDTHS),
      'seeds': _lm.sized(args, 'seeds', SEEDS, FULL_SEEDS),
      'steps': _lm.sized(args, 'steps', STEPS, FULL_STEPS),
      'optimizers': _lm.names(args.optimizers), 'evals': args.evals})

if __name__ == '__main__':
  sys.exit(main())
