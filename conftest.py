"""Root pytest settings: 8 simulated CPU devices for the multi-device tests,
and a persistent compilation cache.

XLA reads ``XLA_FLAGS`` when JAX starts its backend (the first
``jax.devices()`` or computation), so pytest sets it here, before anything
runs. Flags already in the environment are kept; a device count given there
wins. Single-device code still runs on device 0.

Many tests compile the same small programs (a tiny run, resumed, compared,
extended ...), and on XLA:CPU compiling dominates their time. JAX's
persistent compilation cache keeps each executable on disk, shared by the
xdist workers, the subprocesses and the notebooks' kernels (through the
environment), and by later sessions: a second compile of the same program
is a file read, and runs the same executable. ``LIONX_TEST_JAX_CACHE=0``
turns it off; ``LIONX_TEST_JAX_CACHE=DIR`` puts it in DIR (default: a
folder in the system's temporary directory). A ``JAX_COMPILATION_CACHE_DIR``
already in the environment wins.

The tests check what a program computes, not how fast XLA made it run, and
their programs are small: compiling them costs more than running them. So
by default (``LIONX_TEST_COMPILE=fast``) the suite asks XLA for less work:
``jax_disable_most_optimizations`` (LLVM at level 0, no expensive passes)
and XLA:CPU's older elemental emitters
(``--xla_cpu_use_fusion_emitters=false``); fusion and buffer assignment
are HLO passes, which neither touches, so ``memory_analysis()`` is the same.
The full suite takes half the time (docs/development.md). Both settings
travel to the subprocesses and notebook kernels through the environment.
``LIONX_TEST_COMPILE=users`` compiles as users do (the benchmarks always
do). A test of the optimised arithmetic itself (two programs equal bit for
bit, rounding noise, a tolerance near float32's resolution) is marked
``compiled_as_users``; under ``fast`` it runs in a child pytest that
compiles as users do.
"""

import functools
import getpass
import os
import subprocess
import sys
import tempfile

import pytest

DEVICES = 8
_FLAG = '--xla_force_host_platform_device_count'

_flags = os.environ.get('XLA_FLAGS', '')
if _FLAG not in _flags:
  os.environ['XLA_FLAGS'] = f'{_flags} {_FLAG}={DEVICES}'.strip()

COMPILE = os.environ.get('LIONX_TEST_COMPILE', 'fast')
if COMPILE not in ('fast', 'users'):
  raise ValueError(f'LIONX_TEST_COMPILE={COMPILE!r}: expected fast or users.')
_EMITTERS = '--xla_cpu_use_fusion_emitters=false'


def _known_to_xla(flags: str) -> bool:
  """Whether this jaxlib starts with ``flags`` (XLA aborts on unknown flags)."""
  probe = subprocess.run(
      [sys.executable, '-c', 'import jax; jax.devices()'],
      env={**os.environ, 'XLA_FLAGS': flags}, capture_output=True,
      check=False)
  return probe.returncode == 0


if COMPILE == 'fast':
  os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
  _flags = os.environ['XLA_FLAGS']
  if ('xla_cpu_use_fusion_emitters' not in _flags
      and _known_to_xla(f'{_flags} {_EMITTERS}')):
    os.environ['XLA_FLAGS'] = f'{_flags} {_EMITTERS}'

_cache = os.environ.get('LIONX_TEST_JAX_CACHE', os.path.join(
    tempfile.gettempdir(), f'lionx-tests-jax-cache-{getpass.getuser()}'))
if _cache != '0':
  for _name, _value in (('JAX_COMPILATION_CACHE_DIR', _cache),
                        ('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0'),
                        ('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')):
    os.environ.setdefault(_name, _value)


def _as_users_in_a_child(item: pytest.Item) -> None:
  """Runs ``item`` in a child pytest that compiles as users do."""
  env = {**os.environ, 'LIONX_TEST_COMPILE': 'users',
         'JAX_DISABLE_MOST_OPTIMIZATIONS': '0',
         'XLA_FLAGS': os.environ['XLA_FLAGS'].replace(_EMITTERS, '').strip()}
  child = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
       item.nodeid], cwd=item.config.rootpath, env=env, capture_output=True,
      text=True, check=False)
  if child.returncode != 0:
    pytest.fail(f'compiled as users, in a child pytest (exit code '
                f'{child.returncode}):\n{child.stdout[-8000:]}'
                f'{child.stderr[-2000:]}', pytrace=False)


def pytest_collection_modifyitems(items):
  if COMPILE == 'fast':
    for item in items:
      if item.get_closest_marker('compiled_as_users') is not None:
        item.runtest = functools.partial(_as_users_in_a_child, item)
