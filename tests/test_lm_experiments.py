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


def _sqrt_d_result(exponent):
  """r = 0.5 d^exponent at every width; Lion's losses below SGD's except
  the validation loss of width 64, seed 1."""
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
            sqrt_d=[math.sqrt(d[w])])
  return lm_sqrt_d.Result(runs, widths, seeds, ('lion', 'sgd'),
                          {'config': 'c', 'steps': 10, 'evals': 1,
                           'widths': list(widths), 'seeds': list(seeds)})


@pytest.mark.parametrize('exponent,verdict', [
    (0.5, 'consistent'), (0.3, 'not confirmed: r grows like d^0.30')])
def test_sqrt_d_verdicts(exponent, verdict):
  result = _sqrt_d_result(exponent)
  np.testing.assert_allclose(result.slopes('lion'), [exponent] * 2,
                             atol=1e-9)
  found = lm_sqrt_d.claims(result)
  assert found[0][1].startswith('Lion below SGD at the end in 6 of 6')
  assert found[0][2] == 'holds'
  assert found[1][2] == 'holds in 5 of 6'
  assert found[2][2] == verdict and found[3][2] == verdict
  text = lm_sqrt_d.report(result)
  assert '| lion | 64 | 120,576 |' in text


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
  assert claim[2] == 'holds in 12 of 15'
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
  assert mixed[1][2] == 'does not hold: p = 2 is best here, within the ' \
      'spread over seeds'


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
