"""The network reproductions (Chen et al. Figures 3, 4, 6, 7) at tiny size:
the harness's numbers, the theory's claims on real runs, the analysis on
hand-made runs, the command lines and their refusals."""

import json

import numpy as np
import pytest

from lionx import metrics
from experiments import _networks
from experiments import lion_lp_networks as lp
from experiments import weight_confinement as wc
from experiments import weight_decay_sweep as ws
import lionx.train as lt
from tests.train.helpers import tiny_config, write_cifar_archive

LR = 3e-3


def _tiny(**changes):
  """Two epochs (8 steps) of a 4-channel CNN on 64 synthetic images."""
  changes = {'num_epochs': 2, 'tensorboard': False, **changes}
  config = tiny_config(**changes)
  config.model.batch_norm = False
  return config


@pytest.fixture(scope='module')
def data():
  config = _tiny()
  return lt.get_task(config.task).load_data(config)


# --- the recorder: the harness's loop with a hook ---------------------------


@pytest.mark.slow  # 8 steps, but the harness compiles its step, pass, eval
def test_recorder_probes_every_step_of_the_harness_loop(data):
  config = _tiny(seed=3)
  rec = _networks.train(config, data, probes={'linf': metrics.tree_linf})
  # The evaluations are the harness's rows, one per epoch.
  assert [row['step'] for row in rec.evaluations] == [4, 8]
  assert {'full_loss', 'val_loss', 'test_accuracy', 'box_linf_scaled'} <= (
      set(rec.evaluations[-1]))
  assert rec.total_steps == 8 and rec.probes['linf'].shape == (9,)
  assert rec.learning_rates[0] == pytest.approx(LR)  # cosine from LR
  assert np.all(np.diff(rec.learning_rates) < 0)
  # After the last step: the harness's lambda ||theta||_inf, divided by
  # lambda.
  assert rec.probes['linf'][-1] == pytest.approx(
      rec.evaluations[-1]['box_linf_scaled'] / 0.1, rel=1e-6)
  assert rec.d == pytest.approx(rec.evaluations[-1]['sqrt_d'] ** 2)


@pytest.mark.slow
def test_recorder_snapshots(data):
  seen = []
  rec = _networks.train(_tiny(), data, snapshot=lambda p: seen.append(1)
                        or len(seen), snapshot_every=3)
  assert list(rec.snapshot_steps) == [0, 3, 6, 8]
  assert rec.snapshots == [1, 2, 3, 4]


def test_recorder_refuses_bad_snapshots(data):
  # Refused before anything trains.
  with pytest.raises(ValueError, match='snapshot_every=2'):
    _networks.train(_tiny(), data, snapshot_every=2)
  with pytest.raises(TypeError, match='snapshot_every=1.5'):
    _networks.train(_tiny(), data, snapshot=len, snapshot_every=1.5)


def test_first_step_within():
  assert _networks.first_step_within(np.array([3., 2., 1., 1.]), 1.) == 2
  assert _networks.first_step_within(np.array([1., 2., 1.]), 1.) == 2
  assert _networks.first_step_within(np.array([1., 1.]), 1.) == 0
  assert _networks.first_step_within(np.array([1., 2.]), 1.) == -1
  assert _networks.first_step_within(np.array([np.nan, 1.]), 1.) == 1


def test_make_config_and_parse():
  config = _networks.make_config(None, ['num_epochs=2', 'model.width=4'])
  assert (config.num_epochs, config.model.width) == (2, 4)
  assert config.data.name == 'digits' and config.parallel.num_devices == 1
  config = _networks.make_config('configs/default.py', ['num_epochs=3'])
  assert config.num_epochs == 3
  assert _networks.parse_numbers('x', '0,2.5') == (0.0, 2.5)
  with pytest.raises(ValueError, match="--seeds='a'"):
    _networks.parse_numbers('--seeds', 'a', int)
  assert _networks.spread([3.0, 1.0, 2.0], 'g') == '2 [1, 3]'


# --- Figure 3: weight confinement --------------------------------------------


# Every user of this fixture is slow: it trains 4 runs of 32 steps.
@pytest.fixture(scope='module')
def confinement(data):
  config = _tiny(num_epochs=8)  # 32 steps
  return wc.run(config, weight_decays=(100.0, 0.0),
                kernel_inits=('kaiming_uniform', 'kaiming_normal'),
                seeds=(0,), data=data, every=4, bins=51)


@pytest.mark.slow
def test_confinement_histograms_hold_every_weight(confinement):
  # The bins span what the theory allows, so no weight ever falls outside.
  assert len(confinement) == 4
  for r in confinement:
    assert r.hists.shape == (len(r.hist_steps), 51)
    assert list(r.hist_steps) == [0, 4, 8, 12, 16, 20, 24, 28, 32]
    np.testing.assert_array_equal(r.hists.sum(1), r.d)
    assert r.linf.shape == r.rms.shape == (33,)


@pytest.mark.slow
def test_confinement_follows_phase1(confinement):
  for r in confinement:
    if not r.weight_decay:
      continue
    lam, eta = r.weight_decay, r.learning_rates  # cosine: eta_t falls
    excess = lam * r.linf - 1
    # Phase 1: the excess shrinks at least by 1 - eta_t lambda per step.
    bound = max(excess[0], 0) * np.concatenate(
        [[1.0], np.cumprod(1 - eta * lam)])
    assert np.all(excess <= bound + 1e-5)
    for tol in wc.TOLERANCES:
      if r.bound(tol) >= 0:
        assert 0 <= r.steps_to(tol) <= r.bound(tol)
  v = wc.verdict(confinement)
  assert v['steps_within_bound_all']


@pytest.mark.slow
def test_confinement_inits_differ_as_kaiming(confinement):
  uniform = next(r for r in confinement if r.kernel_init == 'kaiming_uniform')
  normal = next(r for r in confinement if r.kernel_init == 'kaiming_normal')
  # Same variance, so the same RMS; the normal has the longer tails.
  assert uniform.rms[0] == pytest.approx(normal.rms[0], rel=0.1)
  assert normal.linf[0] > uniform.linf[0]


def test_confinement_bound_and_growth_on_hand_made_runs():
  def make(lam, linf, rms=None):
    k = len(linf) - 1
    return wc.ConfinementRun(
        'kaiming_uniform', lam, 0, np.full(k, 0.1), np.array(linf),
        np.array(rms if rms is not None else linf), np.arange(1),
        np.linspace(-1, 1, 3), np.zeros((1, 2)), 0.0, 0.0, 1)
  # lambda = 1, eta = 0.1: the excess 1 shrinks by 0.9 per step.
  run = make(1.0, [2.0, 1.9, 1.81, 1.729, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
  assert run.bound(0.5) == 7  # 0.9^7 = 0.478
  assert run.bound(0.8) == 3  # 0.9^3 = 0.729
  assert run.steps_to(0.8) == 3 and run.steps_to(0.0) == 4
  assert make(1.0, [2.0, 1.5, 1.2]).steps_to(0.1) == -1
  assert make(1.0, [0.5, 0.9]).bound(0.01) == 0
  assert make(0.0, [1.0, 2.0]).steps_to(0.01) is None
  rising = make(0.0, np.linspace(1, 2, 21), np.linspace(1, 2, 21))
  assert rising.keeps_growing()
  dip = np.linspace(1, 2, 21)
  dip[12] = dip[10]  # flat over one tenth of the run
  assert not make(0.0, np.linspace(1, 2, 21), dip).keeps_growing()
  assert make(0.0, [1.0, 2.0]).linf_grows()
  assert not make(0.0, [2.0, 1.0], [1.0, 2.0]).linf_grows()


def test_confinement_errors(data):
  config = _tiny()
  with pytest.raises(ValueError, match='weight_decays=1000'):
    wc.run(config, weight_decays=(1000.0,), data=data)  # eta lambda > 1
  with pytest.raises(ValueError, match="kernel_inits='xavier'"):
    wc.run(config, kernel_inits=('xavier',), data=data)
  config.optimizer.name = 'adamw'
  with pytest.raises(ValueError, match="optimizer.name='adamw'"):
    wc.run(config, data=data)


@pytest.mark.slow
def test_confinement_main_resnet18_on_cifar_archives(tmp_path, capsys):
  # ResNet-18 with CIFAR-format data: the code path of Chen et al.'s setting.
  write_cifar_archive(tmp_path, 'cifar10')
  args = ['--out', str(tmp_path / 'out'), '--seeds', '0', '--inits',
          'kaiming_normal', '--weight-decays', '20', '--every', '1',
          'model.name=resnet18', 'model.width=2', 'data.name=cifar10',
          f'data.data_dir={tmp_path}', 'num_epochs=1', 'batch_size=10',
          'eval_batch_size=10']
  assert wc.main(args) == 0
  out = tmp_path / 'out'
  for name in wc.FILES:
    assert (out / name).stat().st_size > 0
  summary = json.loads((out / 'summary.json').read_text())
  (row,) = summary['runs']
  assert row['kernel_init'] == 'kaiming_normal' and row['lambda'] == 20
  assert row['d'] > 10_000  # ResNet-18 at width 2 on 32x32x3
  assert '| kaiming_normal | 20 |' in (out / 'figure3.md').read_text()
  assert 'wrote' in capsys.readouterr().out
  with pytest.raises(FileExistsError, match='--overwrite'):
    wc.main(args)


# --- Figure 4: the weight-decay sweep ----------------------------------------


def _sweep_run(lam, seed, final, linf_end=1.0, curve=None):
  curve = np.array(curve if curve is not None else [1.0, 0.1, final])
  return ws.SweepRun(lam, seed, np.arange(1, len(curve) + 1), curve, curve,
                     np.ones_like(curve), np.array([0.5, linf_end]), 10)


def test_sweep_analysis_on_hand_made_runs():
  finals = {0.0: (1e-4, 2e-4, 3e-4), 0.5: (1e-4, 1.5e-4, 2.5e-4),
            1.0: (2e-4, 4e-4, 5e-4), 2.0: (4e-4, 6e-4, 7e-4),
            4.0: (0.1, 0.2, 0.3)}
  runs = [_sweep_run(lam, s, f, linf_end=2.0 + s)
          for lam, fs in finals.items() for s, f in enumerate(fs)]
  a = ws.analyse(runs)
  assert a.best == 0.5
  # lambda = 1 overlaps the best's range [1e-4, 2.5e-4]; 2 lies above it.
  assert (a.previous, a.threshold) == (1.0, 2.0)
  assert a.inverse_linf_unregularised == [1 / 2, 1 / 3, 1 / 4]
  text = ws.verdict_text(a)
  assert '(1, 2]' in text and 'lies **below the interval**' in text
  rows = ws.table_rows(runs)
  assert rows[0]['final f(θ)'] == '0.0002 [0.0001, 0.0003]'


def test_sweep_threshold_needs_every_larger_lambda():
  runs = [_sweep_run(0.0, 0, 1e-4), _sweep_run(1.0, 0, 1e-2),
          _sweep_run(2.0, 0, 1e-5), _sweep_run(3.0, 0, 1e-1)]
  a = ws.analyse(runs)
  assert a.best == 2.0 and a.threshold == 3.0
  assert ws.analyse(runs[:1]).threshold is None


def test_sweep_speed():
  # Larger lambda reaches 1e-2 (and stays) earlier.
  runs = [_sweep_run(0.0, 0, 1e-3, curve=[1, 1, 1, 1e-3]),
          _sweep_run(1.0, 0, 1e-3, curve=[1, 1, 1e-3, 1e-3]),
          _sweep_run(2.0, 0, 1e-3, curve=[1, 1e-3, 1e-3, 1e-3]),
          _sweep_run(3.0, 0, 1.0, curve=[1, 1, 1, 1])]
  assert runs[1].epochs_to(1e-2) == 3.0
  assert runs[3].epochs_to(1e-2) == float('inf')
  a = ws.analyse(runs)
  assert a.speed_correlation == pytest.approx(-1.0)
  assert 'as in Chen, Liu, Liang, Liu**' in ws.verdict_text(a)


@pytest.mark.slow
def test_sweep_runs_and_main(tmp_path, data, capsys):
  runs = ws.run(_tiny(), weight_decays=(0.0, 50.0), seeds=(0,), data=data)
  assert [r.weight_decay for r in runs] == [0.0, 50.0]
  for r in runs:
    assert r.full_loss.shape == (2,) and r.linf.shape == (9,)
    assert np.all(np.isfinite(r.full_loss))
  assert runs[1].linf[-1] < runs[1].linf[0]  # the decay pulls inwards
  with pytest.raises(ValueError, match='weight_decays=-1'):
    ws.run(_tiny(), weight_decays=(-1.0,), data=data)
  args = ['--out', str(tmp_path), '--seeds', '0', '--weight-decays', '0,5',
          'data.name=synthetic', 'data.num_train=64', 'data.num_test=24',
          'data.image_size=8', 'data.channels=3', 'data.num_classes=4',
          'model.width=4', 'batch_size=16', 'eval_batch_size=32',
          'num_epochs=1']
  assert ws.main(args) == 0
  for name in ws.FILES:
    assert (tmp_path / name).stat().st_size > 0
  text = (tmp_path / 'figure4.md').read_text()
  assert '1/‖θ*‖∞' in text
  with pytest.raises(FileExistsError, match='--overwrite'):
    ws.main(args)
  # The report again, from the stored runs, without training.
  assert ws.main(['--out', str(tmp_path), '--replot', '--overwrite']) == 0
  assert (tmp_path / 'figure4.md').read_text() == text
  with pytest.raises(FileNotFoundError, match='--replot'):
    ws.main(['--out', str(tmp_path / 'none'), '--replot'])
  capsys.readouterr()


# --- Figures 6 and 7: Lion-lp on networks ------------------------------------


# Every user of this fixture is slow: it trains 10 runs.
@pytest.fixture(scope='module')
def lp_runs(data):
  return lp.run(_tiny(num_epochs=1), networks={'cnn': ()}, ps=(1.0, 2.0),
                seeds=(0, 1), rate_multipliers=(0.5, 2.0),
                constraint_epochs=2, data=data)


@pytest.mark.slow
def test_lp_constraint_runs_stay_feasible(lp_runs):
  runs = [r for r in lp_runs if r.kind == 'constraint']
  assert [r.p for r in runs] == [1.0, 2.0]
  for r in runs:
    # Started on the boundary (1 - 1e-4), never past it (Theorem 4.1).
    assert r.constraint[0] == pytest.approx(1 - 1e-4, abs=1e-6)
    assert r.constraint.max() <= 1 + lp.ROUNDING
    assert r.learning_rate * r.weight_decay <= 1
  assert lp.verdict(lp_runs)['constraint_holds']


@pytest.mark.slow
def test_lp_matched_rates_and_choice(lp_runs, data):
  d = lp_runs[0].d
  loss = [r for r in lp_runs if r.kind == 'loss']
  # Two rates on seed 0, then seed 1 at the chosen one, per p.
  assert [(r.p, r.seed, r.multiplier) for r in loss][:2] == [
      (1.0, 0, 0.5), (1.0, 0, 2.0)]
  assert len(loss) == 6
  for r in loss:
    assert r.learning_rate == pytest.approx(
        lp.LEARNING_RATE * r.multiplier * lp.scale(r.p, d))
    assert r.weight_decay == pytest.approx(lp.WEIGHT_DECAY /
                                           lp.scale(r.p, d))
  assert lp.scale(2.0, d) == pytest.approx(d ** 0.5)
  for p in (1.0, 2.0):
    group = lp.chosen(lp_runs, 'cnn', p)
    grid = [r for r in loss if r.p == p and r.seed == 0]
    assert group[0] is min(grid, key=lambda r: r.final_loss)
    assert [r.seed for r in group] == [0, 1]
    assert group[1].multiplier == group[0].multiplier
  rows = lp.loss_rows(lp_runs)
  assert len(rows) == 2 and rows[0]['seeds'] == 2


def _lp(network, p, seed, final, multiplier=1.0):
  return lp.LpRun(network, 'loss', p, seed, 1e-3, 0.1, multiplier,
                  np.array([0.1, 0.2]), np.array([1.0]), np.array([final]),
                  np.array([0.9]), np.array([0.3]), 100)


def test_lp_verdict_on_hand_made_runs():
  runs = []
  for s in range(3):  # vit: p = 1 best, the loss grows with p
    runs += [_lp('vit_tiny', p, s, f * (1 + 0.01 * s))
             for p, f in ((1.0, 0.1), (1.5, 0.2), (2.0, 0.3))]
  for s in range(3):  # resnet: p = 2 best
    runs += [_lp('resnet18_w4', p, s, f * (1 + 0.01 * s))
             for p, f in ((1.0, 0.3), (1.5, 0.2), (2.0, 0.1))]
  v = lp.verdict(runs)
  assert v['vit_tiny']['best_p'] == 1.0 and v['vit_tiny']['separated']
  assert v['vit_tiny']['spearman_p_loss'] == pytest.approx(1.0)
  assert v['resnet18_w4']['best_p'] == 2.0
  text = lp.verdict_text(runs)
  assert text.count('**agrees**') == 2


def test_lp_main_refuses_to_overwrite(tmp_path, capsys):
  (tmp_path / 'figures6_7.md').write_text('earlier')
  with pytest.raises(FileExistsError, match='--overwrite'):
    lp.main(['--out', str(tmp_path)])
  with pytest.raises(ValueError, match="--networks='resnet9'"):
    lp.main(['--out', str(tmp_path / 'x'), '--networks', 'resnet9'])
  capsys.readouterr()


@pytest.mark.slow
def test_lp_resume_trains_only_what_is_missing(lp_runs, data, monkeypatch):
  calls = []
  train_one = lp._train_one

  def counted(*args, **kwargs):
    calls.append(args[2:])
    return train_one(*args, **kwargs)
  monkeypatch.setattr(lp, '_train_one', counted)
  again = lp.run(_tiny(num_epochs=1), networks={'cnn': ()}, ps=(1.0, 2.0),
                 seeds=(0, 1), rate_multipliers=(0.5, 2.0),
                 constraint_epochs=2, data=data, done=lp_runs)
  assert not calls
  assert [(r.kind, r.p, r.seed, r.multiplier) for r in again] == [
      (r.kind, r.p, r.seed, r.multiplier) for r in lp_runs]
  for a, b in zip(again, lp_runs):
    np.testing.assert_array_equal(a.constraint, b.constraint)
  # A wider grid trains only its new rate (and the seeds, if it wins).
  wider = lp.run(_tiny(num_epochs=1), networks={'cnn': ()}, ps=(1.0,),
                 seeds=(0,), rate_multipliers=(0.5, 2.0, 8.0),
                 constraint_epochs=0, data=data, done=lp_runs)
  assert [c[2:5] for c in calls] == [(1.0, pytest.approx(
      lp.LEARNING_RATE * 8.0), pytest.approx(lp.WEIGHT_DECAY))]
  assert len(wider) == 3
