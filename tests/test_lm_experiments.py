"""The language experiments: their verdicts, refusals and result files."""

import json
import math

import numpy as np
import pytest

from experiments import _lm
from experiments import lm_lion_lp
from experiments import lm_perplexity
from experiments import lm_sqrt_d
from tests.train.helpers import ROOT

CONFIG = str(ROOT / 'configs' / 'lm_default.py')


def _run(steps, **columns):
  """A finished run whose rows hold ``columns`` (lists over ``steps``)."""
  rows = [{'step': s, **{k: v[i] for k, v in columns.items()}}
          for i, s in enumerate(steps)]
  return _lm.Run('finished', rows, 0.0)


def _sqrt_d_panel(exponent, panel='gpt2', rates=None, grid=(1.0, 1e-4)):
  """One panel: r = 0.5 d^exponent at every width; Lion's losses below
  SGD's except the validation loss of width 64, seed 1."""
  widths, seeds = (16, 64, 256), (0, 1)
  d = {16: 11_712, 64: 120_576, 256: 1_000_000}
  runs = {}
  for name, base in (('lion', 2.0), ('sgd', 3.0)):
    for w in widths:
      for s in seeds:
        r = 0.5 * d[w] ** exponent
        val = 9.0 if (name, w, s) == ('lion', 64, 1) else base + 0.1
        runs[name, w, s] = _run(
            [10], full_loss=[base], val_loss=[val], grad_norm_ratio=[r],
            grad_norm_ratio_over_sqrt_d=[r / math.sqrt(d[w])],
            sqrt_d=[math.sqrt(d[w])], wall_time=[1.5])
  return lm_sqrt_d.Result(
      lm_sqrt_d.PANELS[panel], runs, widths, seeds, ('lion', 'sgd'),
      {'config': 'c', 'steps': 10, 'evals': 1, 'widths': list(widths),
       'seeds': list(seeds), 'rates': rates or {'lion': 1e-3, 'sgd': 3e-2},
       'grid': list(grid), 'grid_config': 'g', 'seconds': 18.0})


def _sqrt_d_result(exponent, **kwargs):
  return lm_sqrt_d.Reproduction({'gpt2': _sqrt_d_panel(exponent, **kwargs)})


@pytest.mark.parametrize('exponent,verdict', [
    (0.5, 'consistent'), (0.3, 'not confirmed: r grows like d^0.30')])
def test_sqrt_d_verdicts(exponent, verdict):
  result = _sqrt_d_result(exponent)
  np.testing.assert_allclose(result.panels['gpt2'].slopes('lion'),
                             [exponent] * 2, atol=1e-9)
  found = lm_sqrt_d.claims(result)
  assert found[0][1].startswith('Lion below SGD at the end in 6 of 6')
  assert found[0][2] == 'holds'
  # Short of the paper's claim: the verdict says why it may differ.
  assert found[1][2].startswith('holds in 5 of 6; may differ from the '
                                'paper for the reduced size: 10 steps')
  assert '2 seeds' in found[1][2]
  assert found[2][2].split(';')[0] == verdict
  assert found[3][2].split(';')[0] == verdict
  assert ('reduced size' in found[2][2]) == (verdict != 'consistent')
  text = lm_sqrt_d.report(result)
  assert '| lion | 64 | 120,576 |' in text


def test_sqrt_d_claims_cite_the_papers_figures():
  """Dong, Li, Lin: Figure 2 is BERT (masked LM), Figure 3 GPT-2 (LM);
  each has the losses and r."""
  assert lm_sqrt_d.PANELS['bert'].task == 'masked_lm'
  assert lm_sqrt_d.PANELS['gpt2'].task == 'language_model'
  both = lm_sqrt_d.Reproduction({'bert': _sqrt_d_panel(0.5, 'bert'),
                                 'gpt2': _sqrt_d_panel(0.5, 'gpt2')})
  found = lm_sqrt_d.claims(both)
  assert len(found) == 8  # per panel: 2 losses, r of lion and sgd
  for rows, cited, model, other in (
      (found[:4], 'Figure 2 (BERT)', 'BERT', 'GPT'),
      (found[4:], 'Figure 3 (GPT-2)', 'GPT-2', 'BERT')):
    assert all(claim.startswith(cited) and other not in claim
               for claim, _, _ in rows)
    assert model in rows[0][0] and 'training loss' in rows[0][0]
    assert 'test' in rows[1][0] and 'r = Θ(√d)' in rows[2][0]
  text = lm_sqrt_d.report(both)
  assert 'Figures 2 (BERT) and 3 (GPT-2)' in text
  assert 'Figure 2 (BERT): final values' in text
  assert 'Figure 3 (GPT-2): final values' in text


@pytest.mark.parametrize('panel,task,model', [
    ('bert', 'masked_lm', 'bert_tiny'), ('gpt2', 'language_model',
                                         'gpt_tiny')])
def test_sqrt_d_panels_train_their_task(panel, task, model):
  config = _lm.load_config(
      lm_sqrt_d.panel_config(CONFIG, lm_sqrt_d.PANELS[panel]), ())
  assert (config.task, config.model.name) == (task, model)


@pytest.mark.parametrize('grid,side', [
    ((1.0, 3e-1, 1e-1, 3e-2), 'smallest'), ((3e-2, 1e-2, 3e-3), 'largest')])
def test_a_rate_at_a_grid_edge_is_inconclusive(grid, side):
  """SGD's rate 3e-2, picked from a grid whose edge it is: a verdict that
  rests on it is inconclusive, whichever way it came out."""
  assert _lm.grid_edges({'lion': 1e-3, 'sgd': 3e-2}, grid) == {'sgd': side}
  found = lm_sqrt_d.claims(_sqrt_d_result(0.3, grid=grid))
  reason = f"inconclusive: sgd's best rate is the grid's {side}"
  assert found[0][2].startswith(reason) and found[0][2].endswith(
      '(as measured: holds)')
  assert found[1][2].startswith(reason) and 'holds in 5 of 6' in found[1][2]
  assert found[3][2].startswith(reason)  # SGD's r
  # Lion's r rests on Lion's rate, inside the grid (or not in it).
  assert found[2][2].startswith('not confirmed')
  # Inside the grid: the verdict as measured.
  inside = lm_sqrt_d.claims(_sqrt_d_result(0.3, grid=(1.0, 3e-2, 1e-4)))
  assert inside[0][2] == 'holds'
  assert _lm.grid_edges({'sgd': 3e-2}, (3e-2,)) == {}  # nothing picked


def test_the_default_rates_are_inside_their_grid():
  """configs/lm_default.py's rates came from lm_default_grid.py's grid;
  none of them is at its edge (else every verdict on them is
  inconclusive)."""
  grid = _lm.load_config(_lm.GRID_CONFIG, ()).optimizer.lr_grid
  rates = _lm.load_config(CONFIG, ()).optimizer.learning_rates
  assert all(min(grid) < rates[n] < max(grid)
             for n in ('lion', 'sgd', 'adamw'))
  assert _lm.default_grid_edges('configs/lm_default.py',
                                ('lion', 'sgd', 'adamw')) == {}


def test_perplexity_verdict_and_table():
  steps = [20, 40, 60, 80, 100]
  runs = {('lion', s): _run(steps, val_loss=[3.0 - 0.1 * i + 0.01 * s
                                             for i in range(5)])
          for s in (0, 1, 2)}
  runs.update({('sgd', s): _run(steps, val_loss=[2.95 + 0.2 * i
                                                 for i in range(5)])
               for s in (0, 1, 2)})
  result = lm_perplexity.Result(runs, tuple(steps), (0, 1, 2),
                                ('lion', 'sgd'),
                                {'config': 'c', 'steps': 100, 'seeds': []})
  # At step 20 SGD (2.95) is below Lion (3.0, 3.01, 3.02): 12 of 15.
  assert result.lion_below_sgd() == (12, 15)
  (claim,) = lm_perplexity.claims(result)
  assert claim[2] == ('holds in 12 of 15; may differ from the paper for the '
                      'reduced size: 100 steps of a byte-level GPT (paper: '
                      '50,000 of GPT-2 on OpenWebText), 3 seeds')
  assert 'median gap SGD - Lion -0.060 nats at step 20' in claim[1]
  row = result.rows()[-1]
  assert row['lion log-ppl'] == '2.61 [2.6, 2.62]'
  assert row['lion ppl'] == f'{math.exp(2.61):.3g}'


def _lp_result(worst, losses):
  ps = tuple(losses)
  loss_runs = {(p, 1.0, s): _run([10], val_loss=[v], full_loss=[v],
                                 constraint=[0.1])
               for p, values in losses.items() for s, v in enumerate(values)}
  constraint_runs = {p: _run([1, 2], constraint=[0.9999, worst])
                     for p in ps}
  ones = {p: 1.0 for p in ps}
  return lm_lion_lp.Result(loss_runs, constraint_runs, ones, ones, ones, ones,
                           100, (0, 1),
                           {'config': 'c', 'eta': 1.0, 'weight_decay': 0.1,
                            'steps': 10, 'seeds': [0, 1],
                            'multipliers': [1.0]})


def test_lion_lp_verdicts():
  clear = lm_lion_lp.claims(_lp_result(0.99995, {1.0: [2.0, 2.1],
                                                 2.0: [2.2, 2.3]}))
  assert clear[0][2] == 'holds' and clear[1][2] == 'holds'
  mixed = lm_lion_lp.claims(_lp_result(1.01, {1.0: [2.1, 2.6],
                                              2.0: [2.2, 2.3]}))
  assert mixed[0][2] == 'does not hold'
  assert mixed[1][2].startswith(
      'does not hold: p = 2 is best here, within the spread over seeds; '
      'may differ from the paper for the reduced size: 10 steps')


def test_lion_lp_verdict_at_a_grid_edge_is_inconclusive():
  result = _lp_result(0.99995, {1.0: [2.3, 2.4], 2.0: [2.2, 2.25]})
  result.settings['multipliers'] = [1 / 3, 1.0, 3.0]
  for s in result.seeds:
    result.loss_runs[1.0, 3.0, s] = result.loss_runs[1.0, 1.0, s]
  result.chosen = {1.0: 3.0, 2.0: 1.0}  # p = 1's best: the grid's largest
  assert lm_lion_lp.claims(result)[1][2].startswith(
      "inconclusive: p = 1's best rate multiplier is the grid's largest")
  result.chosen[1.0] = 1.0
  assert lm_lion_lp.claims(result)[1][2].startswith('does not hold')


def test_matched_rates():
  assert lm_lion_lp.dual(1.0) == math.inf and lm_lion_lp.dual(2.0) == 2.0
  assert lm_lion_lp.scale(1.0, 10_000) == 1.0
  assert lm_lion_lp.scale(2.0, 10_000) == pytest.approx(100.0)
  assert lm_lion_lp.scale(1.25, 10_000) == pytest.approx(10_000 ** 0.2)


@pytest.mark.parametrize('module,name', [
    (lm_sqrt_d, 'lm_sqrt_d.md'), (lm_perplexity, 'lm_perplexity.md'),
    (lm_lion_lp, 'lm_lion_lp.md')])
def test_results_are_never_overwritten(module, name, tmp_path, capsys):
  (tmp_path / name).write_text('earlier')
  assert module.main(['--out', str(tmp_path), '--config', CONFIG]) == 2
  err = capsys.readouterr().err
  assert 'already exist' in err and '--overwrite' in err
  assert len(err.strip().splitlines()) == 1
  assert (tmp_path / name).read_text() == 'earlier'
  assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('argv,match', [
    (['--steps', '7', '--evals', '2'], '--steps 7 with 2 evaluations'),
    (['--widths', '16,18'], 'expected multiples of 4'),
    (['--seeds', '0,x'], "--seeds='0,x': expected comma-separated ints"),
])
def test_bad_arguments_are_one_line(argv, match, tmp_path, capsys):
  code = lm_sqrt_d.main(['--out', str(tmp_path), '--config', CONFIG, *argv])
  err = capsys.readouterr().err
  assert code == 2 and match in err and 'Traceback' not in err
  assert not (tmp_path / 'runs').exists()


def test_command_writes_the_files_of_its_result(tmp_path, monkeypatch,
                                                capsys):
  steps = [2, 4, 6, 8, 10]
  runs = {(n, 0): _run(steps, val_loss=[v] * 5)
          for n, v in (('lion', 2.0), ('sgd', 3.0))}
  result = lm_perplexity.Result(runs, tuple(steps), (0,), ('lion', 'sgd'),
                                {'config': 'c', 'steps': 10, 'seeds': [0]})
  calls = []

  def fake_run(config, out, **kwargs):
    calls.append((config, out, kwargs))
    return result
  monkeypatch.setattr(lm_perplexity, 'run', fake_run)
  argv = ['--out', str(tmp_path), '--config', CONFIG, '--seeds', '0',
          '--steps', '10', 'model.width=16']
  assert lm_perplexity.main(argv) == 0
  (_, out, kwargs), = calls
  assert kwargs['overrides'] == ['model.width=16'] and kwargs['steps'] == 10
  assert '| claim (paper) | measured here | verdict |' in (
      capsys.readouterr().out)
  assert (tmp_path / 'lm_perplexity.png').read_bytes()[:4] == b'\x89PNG'
  stored = json.loads((tmp_path / 'lm_perplexity.json').read_text())
  assert stored['val_loss']['sgd/0']['10'] == 3.0
  text = (tmp_path / 'lm_perplexity.md').read_text()
  assert '| holds |' in text
  assert lm_perplexity.main(argv) == 2  # the results exist
  assert lm_perplexity.main(argv + ['--overwrite']) == 0


def test_committed_sqrt_d_results_cite_the_figures_right():
  """results/lm_sqrt_d: every claim of Figure 2 is about BERT, every claim
  of Figure 3 about GPT-2, and both figures are there."""
  text = (ROOT / 'results' / 'lm_sqrt_d' / 'lm_sqrt_d.md').read_text()
  claims = [line.split(' | ')[0].lstrip('| ') for line in text.splitlines()
            if line.startswith('| Figure')]
  bert = [c for c in claims if c.startswith('Figure 2')]
  gpt = [c for c in claims if c.startswith('Figure 3')]
  assert bert and gpt and len(bert) + len(gpt) == len(claims)
  assert all(c.startswith('Figure 2 (BERT)') and 'GPT' not in c
             for c in bert)
  assert all(c.startswith('Figure 3 (GPT-2)') and 'BERT' not in c
             for c in gpt)
