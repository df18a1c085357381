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
"""

import getpass
import os
import tempfile

DEVICES = 8
_FLAG = '--xla_force_host_platform_device_count'

_flags = os.environ.get('XLA_FLAGS', '')
if _FLAG not in _flags:
  os.environ['XLA_FLAGS'] = f'{_flags} {_FLAG}={DEVICES}'.strip()

_cache = os.environ.get('LIONX_TEST_JAX_CACHE', os.path.join(
    tempfile.gettempdir(), f'lionx-tests-jax-cache-{getpass.getuser()}'))
if _cache != '0':
  for _name, _value in (('JAX_COMPILATION_CACHE_DIR', _cache),
                        ('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0'),
                        ('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')):
    os.environ.setdefault(_name, _value)
