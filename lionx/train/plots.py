r"""Figures in the style of Figure 1 of Dong, Li, Lin, one curve per run.

Panels, over epochs: the full training loss :math:`f(\theta)` (logging
epoch), test top-1 accuracy, the gradient norm ratio
:math:`r = \|\nabla f\|_1/\|\nabla f\|_2` with the reference line
:math:`\sqrt d` (its upper bound), and :math:`\lambda\|\theta\|_\infty`
with the box boundary 1. Uses matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Curves = dict[str, Sequence[dict[str, Any]]]


def _series(rows, key):
  return [r['epoch'] for r in rows], [r[key] for r in rows]


def _loss(ax, curves: Curves) -> None:
  for label, rows in curves.items():
    ax.plot(*_series(rows, 'full_loss'), label=label)
  ax.set_yscale('log')
  ax.set_title('training loss f(θ) (full pass)')
  ax.set_xlabel('epoch')


def _accuracy(ax, curves: Curves) -> None:
  for label, rows in curves.items():
    epochs, acc = _series(rows, 'test_accuracy')
    ax.plot(epochs, [100 * a for a in acc], label=label)
  ax.set_title('test top-1 accuracy (%)')
  ax.set_xlabel('epoch')


def _ratio(ax, curves: Curves) -> None:
  sqrt_ds = set()
  for label, rows in curves.items():
    ax.plot(*_series(rows, 'grad_norm_ratio'), label=label)
    sqrt_ds.add(round(rows[0]['sqrt_d'], 1))
  for value in sorted(sqrt_ds):
    ax.axhline(value, color='black', linestyle='--', linewidth=1,
               label=f'√d = {value:g}')
  ax.set_ylim(bottom=0)
  ax.set_title('gradient norm ratio r = ‖∇f‖₁ / ‖∇f‖₂')
  ax.set_xlabel('epoch')


def _box(ax, curves: Curves) -> None:
  positive = True
  for label, rows in curves.items():
    epochs, values = _series(rows, 'box_linf_scaled')
    positive &= all(v > 0 for v in values)
    ax.plot(epochs, values, label=label)
  ax.axhline(1.0, color='black', linestyle='--', linewidth=1,
             label='box boundary')
  if positive:
    ax.set_yscale('log')
  ax.set_title('λ‖θ‖∞ (feasible ≤ 1)')
  ax.set_xlabel('epoch')


PANELS = {'loss': _loss, 'accuracy': _accuracy, 'ratio': _ratio,
          'box': _box}


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=110)
  return path


def write_figures(curves: Curves, directory: str | pathlib.Path,
                  title: str = '') -> list[pathlib.Path]:
  """Writes ``figure1.png`` (all panels) and one PNG per panel.

  Args:
    curves: label -> metrics.jsonl rows.
    directory: where the PNGs go.
    title: the suptitle of ``figure1.png``.

  Returns:
    The paths written.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  fig = Figure(figsize=(18, 4.4), layout='constrained')
  axes = fig.subplots(1, len(PANELS))
  for ax, draw in zip(axes, PANELS.values()):
    draw(ax, curves)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  paths = [_save(fig, directory / 'figure1.png')]
  for name, draw in PANELS.items():
    fig = Figure(figsize=(5.5, 4.2), layout='constrained')
    ax = fig.subplots()
    draw(ax, curves)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(_save(fig, directory / f'{name}.png'))
  return paths
