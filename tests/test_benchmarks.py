"""The benchmark scripts' measuring tools (never their timings)."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lionx
from lionx._src import quantized

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / 'benchmarks'
sys.path.insert(0, str(BENCHMARKS))
import update_step  # noqa: E402  pylint: disable=g-import-not-at-top

N = 1 << 16


def _step_hlo(opt, n=N):
  params = jnp.ones(n)
  return update_step.make_step(opt).lower(
      params, opt.init(params), params).compile().as_text()


def test_roofline_moves_five_arrays():
  x = jnp.zeros((N // 1024, 2, 1024))
  g = jnp.ones((N // 1024, 1, 1024))
  text = jax.jit(update_step.roofline_step, donate_argnums=0).lower(
      x, g).compile().as_text()
  assert update_step.hlo_traffic(text) == 5 * 4 * N


@pytest.mark.skipif(jax.default_backend() != 'cpu',
                    reason='the fusion decisions of XLA:CPU')
def test_cpu_lion_step_is_two_loops():
  """The measured reason for the 71% cap: m, then params, 7 arrays."""
  def arrays(opt):  # the scalar step counts move a few bytes more
    return update_step.hlo_traffic(_step_hlo(opt)) // (4 * N)

  assert arrays(lionx.lion(1e-3)) == 7
  # optax.lion adds the momentum copy (read and write): 9 arrays.
  assert arrays(optax.lion(1e-3)) == 9
  assert update_step.copied_bytes(_step_hlo(optax.lion(1e-3))) == 4 * N


def test_traffic_counts_the_8bit_loop():
  """The 8-bit step in bytes per parameter, from its HLO.

  The gradient is an input that the step may not overwrite, so XLA copies
  it (4 in, 4 out); the loop reads codes and that copy (1 + 4) and writes
  codes and c over the copy (1 + 4); the params fusion reads params and c
  and writes params (4 + 4 + 4): 30, and 22 without the copy.
  """
  n = 2 * quantized.CHUNK
  text = _step_hlo(lionx.lion(learning_rate=1e-3, mu_dtype=jnp.int8), n)
  assert ' while(' in text
  traffic = update_step.hlo_traffic(text) / n
  assert 30.0 <= traffic <= 30.5, traffic
  assert update_step.copied_bytes(text) // n == 4


@pytest.mark.slow
def test_momentum_dtype_script_runs_and_writes_nothing(tmp_path):
  results = BENCHMARKS / 'RESULTS.md'
  before = results.read_text()
  out = subprocess.run(
      [sys.executable, str(BENCHMARKS / 'momentum_dtype.py'), '--configs',
       'default', '--seeds', '1', '--epochs', '1', '--variants',
       'optax.lion,6-byte'], capture_output=True, text=True, check=True,
      cwd=tmp_path, timeout=600)
  for row in ('| fp32 |', '| optax.lion |', '| 6-byte |'):
    assert row in out.stdout, row
  assert "The 6-byte setting's median final f(θ)" in out.stdout
  assert results.read_text() == before
  bad = subprocess.run(
      [sys.executable, str(BENCHMARKS / 'momentum_dtype.py'), '--seeds', '0'],
      capture_output=True, text=True, cwd=tmp_path, timeout=600)
  assert bad.returncode == 2 and '--seeds=0: expected >= 1' in bad.stderr


def test_memory_accounting_of_a_step():
  """Compiled memory analysis: AdamW 16 and Lion 12 bytes a parameter."""
  import memory  # pylint: disable=g-import-not-at-top
  adamw = memory.analyse('tiny', 'AdamW fp32')
  lion = memory.analyse('tiny', 'Lion fp32')
  assert adamw['state'] == pytest.approx(8.0, abs=1e-3)
  assert lion['state'] == pytest.approx(4.0, abs=1e-3)
  assert lion['peak'] >= 12.0 and adamw['peak'] >= 16.0
  six = memory.analyse(
      'tiny', 'Lion 6-byte (bf16 + int8 residual + int8 momentum)')
  assert six['params'] == 2.0 and six['grads'] == 2.0
  assert six['state'] == pytest.approx(2 + 4 / 256, abs=1e-3)
  assert six['peak'] >= 6.0


def test_shapes_match_the_models():
  import _shapes  # pylint: disable=g-import-not-at-top
  assert _shapes.size(_shapes.gpt2_small()) == _shapes.GPT2_SMALL_PARAMS
  assert len(jax.tree.leaves(_shapes.gpt2_small())) == 148
  assert _shapes.size(_shapes.resnet18()) == _shapes.RESNET18_PARAMS
  assert len(jax.tree.leaves(_shapes.resnet18())) == 62


@pytest.mark.slow
def test_gpu_sh_cpu_path(tmp_path):
  """benchmarks/gpu.sh --cpu-check: every script at small sizes, one file."""
  out = tmp_path / 'out.md'
  results = BENCHMARKS / 'RESULTS.md'
  before = results.read_text()
  env = {**os.environ, 'PYTHON': sys.executable}
  run = subprocess.run(
      ['bash', str(BENCHMARKS / 'gpu.sh'), '--cpu-check', str(out)],
      capture_output=True, text=True, env=env, timeout=1200, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  text = out.read_text()
  for section in ('## update_step.py', '## memory.py',
                  '## train_throughput.py', '| lionx 6-byte |',
                  '| Lion 6-byte', '| roofline |', 'Device: '):
    assert section in text, section
  assert 'stopped' not in text
  assert results.read_text() == before
  again = subprocess.run(
      ['bash', str(BENCHMARKS / 'gpu.sh'), '--cpu-check', str(out)],
      capture_output=True, text=True, env=env, timeout=60, check=False)
  assert again.returncode == 2 and 'not overwriting' in again.stderr


def test_flash_row_lands_on_flash_lions_params():
  """momentum_dtype.py's optax wrapper of flash_lion: the same bfloat16
  params, bit for bit."""
  import momentum_dtype  # pylint: disable=g-import-not-at-top
  fo = momentum_dtype.flashoptim()
  if fo is None:
    pytest.skip('flashoptim-jax is not installed')
  key = jax.random.PRNGKey(0)
  params = {'w': (0.05 * jax.random.normal(key, (70, 3))).astype(
      jnp.bfloat16), 'b': jnp.zeros(5, jnp.bfloat16)}
  tx = momentum_dtype.flash_transform(fo, 1e-3, 0.9, 0.99, 0.1)
  ref = fo.flash_lion(1e-3, 0.9, 0.99, weight_decay=0.1, fused=False)
  state, ref_state, ref_params = tx.init(params), ref.init(params), params
  for k in range(4):
    grads = jax.tree.map(
        lambda p, k=k: jnp.sin(jnp.arange(p.size, dtype=jnp.float32) + k
                               ).reshape(p.shape).astype(p.dtype), params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    params = optax.apply_updates(params, updates)
    ref_params, ref_state = ref.step(ref_params, ref_state, grads)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params),
                    strict=True):
      assert a.dtype == b.dtype
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.any(np.asarray(params['w']) != 0)
