"""Root pytest settings: 8 simulated CPU devices for the multi-device tests.

XLA reads ``XLA_FLAGS`` when JAX starts its backend (the first
``jax.devices()`` or computation), so pytest sets it here, before anything
runs. Flags already in the environment are kept; a device count given there
wins. Single-device code still runs on device 0.
"""

import os

DEVICES = 8
_FLAG = '--xla_force_host_platform_device_count'

_flags = os.environ.get('XLA_FLAGS', '')
if _FLAG not in _flags:
  os.environ['XLA_FLAGS'] = f'{_flags} {_FLAG}={DEVICES}'.strip()
