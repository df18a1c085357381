"""The Lion-K frontier command (experiments.lion_k_frontier)."""

import json
import math

import pytest

from experiments import lion_k_frontier as frontier
from tests.train.helpers import tiny_config

RUN = frontier.run  # the tests below monkeypatch frontier.run


@pytest.fixture(scope='module')
def result():
  config = tiny_config(num_epochs=1)
  return frontier.run(config, optimizers=('lion', 'lion_spectral',
                                          'lion_cwd', 'adamw'),
                      grid=(3e-2, 3e-3), seeds=(0, 1),
                      rates={'lion': 3e-3, 'lion_cwd': 3e-3, 'adamw': 3e-3},
                      rounds=3)


@pytest.mark.slow  # the fixture trains 15 tiny runs
def test_grid_keeps_the_lowest_final_loss(result):
  assert set(result.grid) == {'lion_spectral'}  # the others: rates given
  for name, grid in result.grid.items():
    assert result.rates[name] == min(grid, key=grid.get)
  assert result.rates['lion'] == 3e-3


@pytest.mark.slow
def test_table_and_verdict_come_from_the_runs(result):
  rows = {r['optimizer']: r for r in frontier.table(result)}
  finals = result.finals('lion', 'full_loss')
  assert len(finals) == 2 and finals[0] != finals[1]  # two seeds
  med = sorted(finals)
  assert rows['lion']['final f(θ)'].startswith(
      f'{(med[0] + med[1]) / 2:.3g} [{med[0]:.3g}, {med[1]:.3g}]')
  assert rows['lion_cwd']['final constraint'].startswith('none')
  assert rows['adamw']['final constraint'].startswith('n/a')
  assert all(r['ms / step'] > 0 for r in rows.values())
  text = frontier.report(result)
  assert 'lion_cwd vs lion: median final f(θ)' in text
  assert 'lion_spectral: its constraint went from' in text
  assert 'lion_spectral' in text.split('## Grid')[1]
  assert text.rstrip().endswith(
      'Rates given, not searched (--rates): lion 0.003, lion_cwd 0.003, '
      'adamw 0.003.')
  summary = json.loads(json.dumps(result.summary()))
  assert math.isnan(summary['optimizers']['lion_cwd']['constraint'][0])


def _hand_made():
  """A frontier of three optimizers, two seeds, two evaluations each."""
  def rows(loss, constraint):
    return [{'epoch': e, 'full_loss': loss / e, 'val_loss': 2 * loss / e,
             'constraint': constraint, 'box_linf_scaled': constraint}
            for e in (1, 2)]
  nan = float('nan')
  return frontier.Frontier(
      'cnn on synthetic', {'lion': 3e-3, 'lion_cwd': 3e-3, 'adamw': 1e-3},
      {'adamw': {1e-3: 0.5, 1e-2: nan}},
      {'lion': [rows(1.0, 0.5), rows(1.2, 0.6)],
       'lion_cwd': [rows(0.9, nan), rows(1.1, nan)],
       'adamw': [rows(0.8, nan), rows(0.7, nan)]},
      {'lion': 1.0, 'lion_cwd': 1.1, 'adamw': 1.5})


def test_the_command_writes_once(tmp_path, monkeypatch):
  result = _hand_made()
  monkeypatch.setattr(frontier, 'run', lambda *a, **k: result)
  assert frontier.main(['--out', str(tmp_path), '--seeds', '0,1']) == 0
  for name in frontier.FILES:
    assert (tmp_path / name).stat().st_size > 0
  with pytest.raises(FileExistsError, match='--overwrite'):
    frontier.main(['--out', str(tmp_path)])
  # --replot redraws from the JSON alone: the same report.
  before = (tmp_path / 'frontier.md').read_text()
  (tmp_path / 'frontier.md').unlink()
  monkeypatch.setattr(frontier, 'run', None)  # no training
  assert frontier.main(['--out', str(tmp_path), '--replot']) == 0
  assert (tmp_path / 'frontier.md').read_text() == before
  with pytest.raises(FileNotFoundError, match='--replot: no'):
    frontier.main(['--out', str(tmp_path / 'none'), '--replot'])
  # --rates: the named optimizers skip the grid; malformed pairs refused.
  seen = {}
  monkeypatch.setattr(frontier, 'run',
                      lambda *a, **k: seen.update(k) or result)
  assert frontier.main(['--out', str(tmp_path / 'r'),
                        '--rates', 'lion=1e-3, adamw=3e-3']) == 0
  assert seen['rates'] == {'lion': 1e-3, 'adamw': 3e-3}
  for bad in ('lion', 'lion=x', 'lion=-1', '=1e-3', 'lion=inf'):
    with pytest.raises(ValueError, match='--rates='):
      frontier.main(['--out', str(tmp_path / 'b'), '--rates', bad])
  with pytest.raises(ValueError, match="rates names 'lio'"):
    RUN(tiny_config(), optimizers=['lion'], rates={'lio': 1.0})
  with pytest.raises(ValueError, match="--seeds='x'"):
    frontier.main(['--out', str(tmp_path / 'b'), '--seeds', 'x'])
