"""The suite's compiler settings (conftest.py): less optimisation work by
default, and the settings users compile with for tests marked
``compiled_as_users`` (run in a child pytest)."""

import os
import pathlib
import subprocess
import sys

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = os.environ.get('LIONX_TEST_COMPILE', 'fast') == 'fast'


@pytest.mark.skipif(not FAST, reason='LIONX_TEST_COMPILE=users')
def test_the_suite_compiles_with_less_optimisation():
  assert jax.config.read('jax_disable_most_optimizations')
  # This jaxlib knows the flag, so the probe in conftest.py kept it.
  assert '--xla_cpu_use_fusion_emitters=false' in os.environ['XLA_FLAGS']


@pytest.mark.compiled_as_users
def test_a_marked_test_compiles_as_users_do():
  assert os.environ['LIONX_TEST_COMPILE'] == 'users'
  assert not jax.config.read('jax_disable_most_optimizations')
  assert 'xla_cpu_use_fusion_emitters' not in os.environ['XLA_FLAGS']
  assert jax.jit(lambda x: x * 2.0 + 1.0)(1.0) == 3.0


def test_an_unknown_setting_is_refused_by_name():
  run = subprocess.run(
      [sys.executable, '-m', 'pytest', '--collect-only', '-q', '-p',
       'no:cacheprovider', 'tests/test_suite_settings.py'],
      cwd=ROOT, env={**os.environ, 'LIONX_TEST_COMPILE': 'quick'},
      capture_output=True, text=True, check=False)
  assert run.returncode != 0
  assert "LIONX_TEST_COMPILE='quick': expected fast or users." in (
      run.stdout + run.stderr)
