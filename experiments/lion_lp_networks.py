r"""Figures 6 and 7 of Chen, Liu, Liang, Liu, vision panels: Lion-ℓp
on a ResNet and a ViT.

Lion-:math:`\ell_p` (:func:`lionx.lp_reshaper`, the global norm over all
:math:`d` parameters) with weight decay :math:`\lambda` solves :math:`\min f`
s.t. :math:`\|\lambda\theta\|_q \le 1`, :math:`1/p + 1/q = 1`. The paper
shows on ImageNet (ResNet-50, ViT-B/16) that the constraint holds over training
(Figure 6) and compares the loss for several :math:`p` (Figure 7): "Lion-ℓ1
performs better than Lion with other p ... when ViT is used", and "the
trend is reversed when ResNet-50 is used".

Two kinds of runs, on the embedded digits (the networks are small enough
for a CPU; CIFAR-format data and other sizes run with overrides):

* **Figure 6, the constraint.** One run per (network, p), started *on* the
  boundary: :math:`\lambda_p = (1 - 10^{-4})/\|\theta_0\|_q`, so the first
  step that pushed outwards would break the constraint. The reshaper's
  ``constraint`` :math:`\|\lambda_p\theta_t\|_q` is recorded after every
  step; Theorem 4.1 (with :math:`\eta\lambda \le 1`) says it stays
  :math:`\le 1`. Float32 rounding allows :data:`ROUNDING` above 1.
* **Figure 7, the loss against p.** The same problem family for every
  :math:`p`: :math:`\eta_p = \eta\,d^{1/q}` and :math:`\lambda_p =
  \lambda\,d^{-1/q}`. For a direction whose entries all have the same size,
  every :math:`p` then takes the same step as Lion, with the same decay
  factor :math:`1 - \eta_p\lambda_p`, and the constraint
  :math:`\|\lambda_p\theta\|_q \le 1` reads
  :math:`(\frac1d\sum_i|\theta_i|^q)^{1/q} \le 1/\lambda`: the ℓq ball
  through the corners of Lion's box. Since that matching is a choice, each
  :math:`p` gets its own learning rate from a grid
  (``rate_multipliers`` times :math:`\eta_p`, chosen by the final training
  loss :math:`f(\theta)` of seed 0), then runs on the other seeds at that
  rate. The tables give the median [min, max] over the seeds.

Command (about 50 minutes on 2 shared CPU cores)::

  python -m experiments.lion_lp_networks --out results/figures6_7
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from typing import Any, Optional, Sequence

import jax
import numpy as np

import lionx.train as lt
from lionx import checks
from lionx import metrics
from experiments import _common
from experiments import _networks

PS = (1.0, 1.25, 1.5, 2.0)
# Networks that train on the digits on a CPU: (name, overrides).
NETWORKS = {
    'resnet18_w4': ('model.name=resnet18', 'model.width=4'),
    'vit_tiny': ('model.name=vit_tiny',),
}
LEARNING_RATE = 3e-3  # eta for p = 1 (Lion); eta_p = eta d^{1/q}
WEIGHT_DECAY = 0.1  # lambda for p = 1; lambda_p = lambda d^{-1/q}
RATE_MULTIPLIERS = (1 / 3, 1.0, 3.0, 9.0)
EPOCHS = 5
CONSTRAINT_EPOCHS = 2
ROUNDING = 1e-5  # float32 slack on ||lambda theta||_q <= 1


def base_config() -> lt.Config:
  """The digits setting of ``configs/default.py`` with Lion-ℓp, cosine,
  5 epochs."""
  config = _networks.digits_config()
  config.num_epochs = EPOCHS
  config.optimizer.name = 'lion_lp'
  config.optimizer.learning_rate = LEARNING_RATE  # each run sets its own
  config.optimizer.lion_lp.scope = 'global'
  return config


def dual(p: float) -> float:
  """q with 1/p + 1/q = 1 (inf for p = 1)."""
  return float('inf') if p == 1 else p / (p - 1)


def scale(p: float, d: int) -> float:
  r""":math:`d^{1/q}`: the ratio of :math:`\eta_p` to Lion's rate."""
  return 1.0 if p == 1 else d ** (1.0 / dual(p))


@dataclasses.dataclass
class LpRun:
  """One Lion-ℓp run."""

  network: str
  kind: str  # 'constraint' (Figure 6) or 'loss' (Figure 7)
  p: float
  seed: int
  learning_rate: float  # eta_p (peak)
  weight_decay: float  # lambda_p
  multiplier: float  # of the matched rate (1 for the constraint runs)
  constraint: np.ndarray  # (K + 1,) ||lambda_p theta_t||_q
  epochs: np.ndarray
  full_loss: np.ndarray  # (E,)
  test_accuracy: np.ndarray  # (E,)
  val_loss: np.ndarray  # (E,)
  d: int

  @property
  def final_loss(self) -> float:
    return float(self.full_loss[-1])

  def row(self) -> dict[str, Any]:
    return {
        'network': self.network, 'kind': self.kind, 'p': self.p,
        'q': dual(self.p), 'seed': self.seed, 'd': self.d,
        'learning_rate': self.learning_rate,
        'weight_decay': self.weight_decay, 'multiplier': self.multiplier,
        'constraint_start': float(self.constraint[0]),
        'constraint_max': float(self.constraint.max()),
        'constraint_end': float(self.constraint[-1]),
        'final_full_loss': self.final_loss,
        'final_val_loss': float(self.val_loss[-1]),
        'final_test_accuracy': float(self.test_accuracy[-1])}


def _network_config(config: lt.Config, network: str,
                    overrides: Sequence[str]) -> lt.Config:
  sub = lt.copy(config)
  for item in overrides:
    lt.override(sub, item)
  return lt.validate(sub)


def _initial(config: lt.Config, data: Any) -> Any:
  """theta_0 of ``config`` (the model of its seed)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  task = lt.get_task(config.task)
  model = task.create_model(config, task.data_spec(data), config.seed)
  return nnx.as_pure(nnx.state(model, nnx.Param))


def _key(network: str, kind: str, p: float, seed: int, lr: float,
         lam: float, epochs: float) -> tuple:
  return (network, kind, float(p), int(seed), f'{lr:.9g}', f'{lam:.9g}',
          float(epochs))


def _train_one(config: lt.Config, data: Any, network: str,
               kind: str, p: float, lr: float, lam: float, multiplier: float,
               seed: int) -> LpRun:
  sub = lt.copy(config)
  sub.seed = seed
  sub.optimizer.name = 'lion_lp'
  sub.optimizer.lion_lp.p = float(p)
  sub.optimizer.learning_rate = float(lr)
  sub.optimizer.weight_decay = float(lam)
  sub.optimizer.weight_decays = {}
  reshaper = _networks.optimizer_of(lt.validate(sub), data).reshaper()
  rec = _networks.train(sub, data, probes={
      'constraint': lambda params: reshaper.constraint(params, lam)})
  return LpRun(network, kind, float(p), seed, float(lr), float(lam),
               float(multiplier), rec.probes['constraint'],
               rec.curve('full_loss')[0], rec.curve('full_loss')[1],
               rec.curve('test_accuracy')[1], rec.curve('val_loss')[1],
               rec.d)


def run(config: Optional[lt.Config] = None, *,
        networks: Optional[dict[str, Sequence[str]]] = None,
        ps: Sequence[float] = PS, seeds: Sequence[int] = (0, 1, 2),
        learning_rate: float = LEARNING_RATE,
        weight_decay: float = WEIGHT_DECAY,
        rate_multipliers: Sequence[float] = RATE_MULTIPLIERS,
        constraint_epochs: int = CONSTRAINT_EPOCHS, data: Any = None,
        done: Sequence[LpRun] = (), verbose: bool = False) -> list[LpRun]:
  """The runs of Figures 6 and 7 (module doc) for each network.

  Args:
    config: the base config (default :func:`base_config`); ``num_epochs``
      is the length of the Figure 7 runs.
    networks: name -> config overrides (default :data:`NETWORKS`).
    ps: the exponents p >= 1.
    seeds: the first one chooses each p's rate; all run at that rate.
    learning_rate, weight_decay: eta and lambda for p = 1.
    rate_multipliers: the grid, times the matched rate eta d^{1/q}.
    constraint_epochs: the length of the Figure 6 runs (0: none).
    data: the task's loaded data (default: loaded from the config).
    done: runs of an earlier call; a run with the same network, kind, p,
      seed, learning rate, weight decay and length is taken from here
      instead of trained again (``--resume``).
    verbose: print a line per run.

  Returns:
    Every run, the constraint runs first.
  """
  config = lt.copy(base_config() if config is None else config)
  networks = dict(NETWORKS if networks is None else networks)
  for p in ps:
    checks.in_range('ps', p, 1.0, 1e6)
  checks.positive('learning_rate', learning_rate)
  checks.in_range('weight_decay', weight_decay, 0.0, 1e6)
  for m in rate_multipliers:
    checks.positive('rate_multipliers', m)
  if not (ps and seeds and rate_multipliers and networks):
    raise ValueError('ps, seeds, rate_multipliers and networks must not be '
                     'empty.')
  if isinstance(constraint_epochs, bool) or not isinstance(
      constraint_epochs, int) or constraint_epochs < 0:
    raise ValueError(f'constraint_epochs={constraint_epochs!r}: expected an '
                     'int >= 0.')
  if data is None:
    data = lt.get_task(config.task).load_data(config)
  out: list[LpRun] = []
  stored = {_key(r.network, r.kind, r.p, r.seed, r.learning_rate,
                 r.weight_decay, r.epochs[-1]): r for r in done}

  def say(r: LpRun, again: bool) -> None:
    if verbose:
      print(f'{r.network} {r.kind} p={r.p:g} seed {r.seed}: eta '
            f'{r.learning_rate:.3g}, lambda {r.weight_decay:.3g}; '
            f'constraint {r.constraint[0]:.4f} -> max '
            f'{r.constraint.max():.6f}; final f(theta) '
            f'{r.final_loss:.4g}' + (' (stored)' if again else ''),
            flush=True)

  def _train(cfg, network, kind, p, lr, lam, multiplier, seed) -> LpRun:
    key = _key(network, kind, p, seed, lr, lam, cfg.num_epochs)
    if key in stored:
      say(stored[key], True)
      return dataclasses.replace(stored[key], multiplier=float(multiplier))
    r = _train_one(cfg, data, network, kind, p, lr, lam, multiplier, seed)
    say(r, False)
    return r

  for network, overrides in networks.items():
    net = _network_config(config, network, overrides)
    if constraint_epochs:
      short = lt.copy(net)
      short.num_epochs, short.num_steps = constraint_epochs, 0
      short.seed = seeds[0]
      theta0 = _initial(lt.validate(short), data)
      d = int(metrics.tree_size(theta0))
      for p in ps:
        gauge = _lq(theta0, dual(p))
        lam = (1 - 1e-4) / gauge
        lr = learning_rate * scale(p, d)
        if lr * lam > 1:
          raise ValueError(f'p={p:g}: eta lambda = {lr * lam:.3g} > 1; '
                           'lower learning_rate.')
        out.append(_train(short, network, 'constraint', p, lr, lam, 1.0,
                          seeds[0]))
    d = int(metrics.tree_size(_initial(net, data)))
    for p in ps:
      base_lr = learning_rate * scale(p, d)
      lam = weight_decay / scale(p, d)
      grid = [_train(net, network, 'loss', p, base_lr * m, lam, m, seeds[0])
              for m in rate_multipliers]
      finite = [r for r in grid if np.isfinite(r.final_loss)]
      best = min(finite or grid, key=lambda r: r.final_loss)
      out.extend(grid)
      for seed in seeds[1:]:
        out.append(_train(net, network, 'loss', p, best.learning_rate, lam,
                          best.multiplier, seed))
  return out


def _lq(tree: Any, q: float) -> float:
  leaves = [np.abs(np.asarray(x, np.float64)).ravel()
            for x in jax.tree.leaves(tree)]
  flat = np.concatenate(leaves)
  if np.isinf(q):
    return float(flat.max())
  return float(np.sum(flat ** q) ** (1 / q))


# --- selection, tables, verdicts ---------------------------------------------


def chosen(runs: Sequence[LpRun], network: str, p: float) -> list[LpRun]:
  """The Figure 7 runs of (network, p) at the chosen rate, one per seed."""
  loss = [r for r in runs if r.kind == 'loss' and r.network == network
          and r.p == p]
  if not loss:
    return []
  first_seed = loss[0].seed
  grid = [r for r in loss if r.seed == first_seed]
  finite = [r for r in grid if np.isfinite(r.final_loss)]
  best = min(finite or grid, key=lambda r: r.final_loss)
  return [best] + [r for r in loss if r.seed != first_seed
                   and r.multiplier == best.multiplier]


def constraint_rows(runs: Sequence[LpRun]) -> list[dict[str, Any]]:
  """Figure 6: one row per (network, p) of the constraint runs."""
  rows = []
  for r in runs:
    if r.kind != 'constraint':
      continue
    rows.append({
        'network': r.network, 'p': f'{r.p:g}', 'q': f'{dual(r.p):g}',
        'λ_p': f'{r.weight_decay:.3g}', 'η_p': f'{r.learning_rate:.3g}',
        'steps': len(r.constraint) - 1,
        '‖λθ_0‖_q': f'{r.constraint[0]:.6f}',
        'max_t ‖λθ_t‖_q': f'{r.constraint.max():.6f}',
        '‖λθ_K‖_q': f'{r.constraint[-1]:.6f}',
        '≤ 1 at every step': bool(r.constraint.max() <= 1 + ROUNDING)})
  return rows


def loss_rows(runs: Sequence[LpRun]) -> list[dict[str, Any]]:
  """Figure 7: per (network, p), the chosen rate and the final numbers."""
  rows = []
  networks = list(dict.fromkeys(r.network for r in runs if r.kind == 'loss'))
  for network in networks:
    for p in sorted({r.p for r in runs if r.network == network}):
      group = chosen(runs, network, p)
      if not group:
        continue
      grid = [r for r in runs if r.kind == 'loss' and r.network == network
              and r.p == p and r.seed == group[0].seed]
      rows.append({
          'network': network, 'p': f'{p:g}',
          'rate × η d^{1/q}': ', '.join(
              f'{r.multiplier:.3g}: {r.final_loss:.3g}' for r in grid),
          'chosen η_p': f'{group[0].learning_rate:.3g}',
          'λ_p': f'{group[0].weight_decay:.3g}', 'seeds': len(group),
          'final f(θ)': _networks.spread([r.final_loss for r in group]),
          'final test loss': _networks.spread(
              [r.val_loss[-1] for r in group]),
          'final test top-1 (%)': _networks.spread(
              [100 * r.test_accuracy[-1] for r in group], '.1f'),
          'max_t ‖λθ_t‖_q': f'{max(r.constraint.max() for r in group):.4f}',
      })
  return rows


def ranking(runs: Sequence[LpRun], network: str) -> list[tuple[float, float]]:
  """(p, median final f) of ``network``, best first."""
  out = []
  for p in sorted({r.p for r in runs if r.network == network}):
    group = chosen(runs, network, p)
    if group:
      out.append((p, statistics.median(r.final_loss for r in group)))
  return sorted(out, key=lambda x: x[1])


def _separated(runs: Sequence[LpRun], network: str, p: float) -> bool:
  """Whether every seed of p beats every seed of each other p."""
  mine = [r.final_loss for r in chosen(runs, network, p)]
  others = [r.final_loss for q in {r.p for r in runs if r.network == network}
            if q != p for r in chosen(runs, network, q)]
  return bool(mine and others and max(mine) < min(others))


def verdict(runs: Sequence[LpRun]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  constraint = [r for r in runs if r.kind == 'constraint']
  if constraint:
    out['constraint_holds'] = all(r.constraint.max() <= 1 + ROUNDING
                                  for r in constraint)
    out['constraint_max'] = max(float(r.constraint.max())
                                for r in constraint)
  for network in dict.fromkeys(r.network for r in runs if r.kind == 'loss'):
    order = ranking(runs, network)
    if not order:
      continue
    best = order[0][0]
    ps = [p for p, _ in sorted(order)]
    medians = [dict(order)[p] for p in ps]
    trend = _spearman(ps, medians)
    out[network] = {'best_p': best, 'separated': _separated(runs, network,
                                                           best),
                    'spearman_p_loss': trend,
                    'median_final_loss': dict(sorted(order))}
  return out


def _spearman(x, y) -> Optional[float]:
  if len(x) < 3:
    return None
  rx = np.argsort(np.argsort(x)).astype(float)
  ry = np.argsort(np.argsort(y)).astype(float)
  if rx.std() == 0 or ry.std() == 0:
    return None
  return float(np.corrcoef(rx, ry)[0, 1])


def verdict_text(runs: Sequence[LpRun]) -> str:
  v = verdict(runs)
  lines = []
  if 'constraint_holds' in v:
    lines.append(
        f'* Figure 6: from a start on the boundary, max_t ‖λθ_t‖_q = '
        f'{v["constraint_max"]:.6f} over every run and step. Paper: the '
        'constraint holds over training. '
        + ('**Reproduced** (≤ 1 up to float32 rounding).'
           if v['constraint_holds'] else '**Not reproduced.**'))
  for network, w in v.items():
    if not isinstance(w, dict):
      continue
    trend = w['spearman_p_loss']
    trend_text = ('' if trend is None else
                  f'; Spearman correlation of p with the median final f(θ): '
                  f'{trend:+.2f} (positive: smaller p is better)')
    lines.append(
        f'* Figure 7, {network}: lowest median final f(θ) at p = '
        f'{w["best_p"]:g}' + (' (every seed below every seed of the other '
                               'p)' if w['separated'] else
                               ' (the seeds\' ranges overlap)') + trend_text
        + '.')
  claims = []
  for network, w in v.items():
    if not isinstance(w, dict):
      continue
    if 'vit' in network:
      claims.append(f'  Chen, Liu, Liang, Liu (ViT: p = 1 is best): here '
                    f'p = {w["best_p"]:g}: '
                    + ('**agrees**.' if w['best_p'] == 1 else
                       '**disagrees**.'))
    if 'resnet' in network:
      reversed_ = w['best_p'] != 1 and (w['spearman_p_loss'] or 0) < 0
      claims.append(f'  Chen, Liu, Liang, Liu (ResNet-50: the trend '
                    f'reverses, larger p better): here p = {w["best_p"]:g} '
                    'is best: '
                    + ('**agrees**.' if reversed_ else '**disagrees**.'))
  return '\n'.join(lines + claims)


def plot(runs: Sequence[LpRun]):
  """Figure 6 (top: the constraint per step) and Figure 7 (bottom: final
  f against p, median and range over the seeds) per network."""
  networks = list(dict.fromkeys(r.network for r in runs))
  fig = _common.figure(figsize=(5.5 * len(networks), 8.2),
                       layout='constrained')
  axes = np.array(fig.subplots(2, len(networks), squeeze=False))
  for j, network in enumerate(networks):
    top, bottom = axes[0, j], axes[1, j]
    for i, r in enumerate(x for x in runs if x.network == network
                          and x.kind == 'constraint'):
      top.plot(np.arange(len(r.constraint)), r.constraint, color=f'C{i}',
               lw=1.3, label=f'p = {r.p:g} (q = {dual(r.p):g})')
    top.axhline(1.0, color='k', ls='--', lw=1, label='the boundary')
    top.set_xlabel('step')
    top.set_ylabel('‖λ_p θ_t‖_q')
    top.set_title(f'{network}: Figure 6, start on the boundary',
                  fontsize=10)
    top.legend(fontsize=7)
    ps = sorted({r.p for r in runs if r.network == network
                 and r.kind == 'loss'})
    if ps:
      finals = [[r.final_loss for r in chosen(runs, network, p)] for p in ps]
      med = [statistics.median(f) for f in finals]
      bottom.plot(ps, med, 'o-', color='C0', label='median over seeds')
      bottom.fill_between(ps, [min(f) for f in finals],
                          [max(f) for f in finals], color='C0', alpha=0.25,
                          label='min – max')
      bottom.set_yscale('log')
    bottom.set_xlabel('p (Lion-ℓp; p = 1 is Lion)')
    bottom.set_ylabel('final training loss f(θ_K)')
    bottom.set_title(f'{network}: Figure 7, final loss against p',
                     fontsize=10)
    bottom.legend(fontsize=7)
  return fig


FILES = ('figures6_7.png', 'figures6_7.md', 'figures6_7.csv',
         'summary.json')


def report(runs: Sequence[LpRun], command: str = '') -> str:
  seeds = sorted({r.seed for r in runs})
  return (
      '# Figures 6 and 7 of Chen, Liu, Liang, Liu (vision): Lion-ℓp on a '
      'ResNet and a ViT\n\n'
      + (f'Command: `{command}`\n\n' if command else '')
      + f'Seeds {seeds}; cells: median [min, max] over the seeds.\n\n'
      '## Figure 6: ‖λθ‖_q over training, from the boundary\n\n'
      + _common.markdown_table(constraint_rows(runs))
      + '\n## Figure 7: final loss against p (η_p = η d^{1/q}·rate, '
      'λ_p = λ d^{-1/q})\n\n'
      + _common.markdown_table(loss_rows(runs)) + '\n'
      + verdict_text(runs) + '\n')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: the runs, figures6_7.png and the tables."""
  parser = _networks.parser('lion_lp_networks', __doc__)
  parser.add_argument('--ps', default=','.join(f'{p:g}' for p in PS))
  parser.add_argument('--networks', default=','.join(NETWORKS),
                      help=f'names among {tuple(NETWORKS)}')
  parser.add_argument('--rates', default=','.join(
      f'{m:.6g}' for m in RATE_MULTIPLIERS),
                      help='the rate grid, multiples of eta d^{1/q}')
  parser.add_argument('--constraint-epochs', type=int,
                      default=CONSTRAINT_EPOCHS)
  parser.add_argument('--replot', action='store_true',
                      help='redraw the figure and tables from the runs in '
                      'OUT/summary.json (with --overwrite); train nothing')
  parser.add_argument('--resume', action='store_true',
                      help='take the runs stored in OUT/summary.json '
                      'instead of training them again, train the others '
                      '(e.g. a wider --rates), and replace the report')
  args = parser.parse_args(argv)
  names = [n for n in args.networks.split(',') if n]
  for name in names:
    checks.one_of('--networks', name, tuple(NETWORKS))
  done: list[LpRun] = []
  if args.replot or args.resume:
    done, command = _networks.stored_runs(args.out, LpRun)
    runs = done
  paths = dict(zip(FILES, _common.check_outputs(
      args.out, FILES, args.overwrite or args.resume)))
  if not args.replot:
    config = _networks.make_config(args.config, args.overrides, base_config)
    runs = run(config, networks={n: NETWORKS[n] for n in names},
               ps=_networks.parse_numbers('--ps', args.ps),
               seeds=_networks.parse_numbers('--seeds', args.seeds, int),
               rate_multipliers=_networks.parse_numbers('--rates',
                                                        args.rates),
               constraint_epochs=args.constraint_epochs, done=done,
               verbose=True)
    command = _networks.command('lion_lp_networks', argv)
  plot(runs).savefig(paths['figures6_7.png'], dpi=110)
  _networks.write_results(paths, report(runs, command), runs, command,
                          {'verdict': verdict(runs)})
  return 0


if __name__ == '__main__':
  sys.exit(main())
