"""lionx.train's public API: a flat namespace of the harness, imported on
first use (PEP 562), what experiments/ is allowed to use."""

import importlib
import subprocess
import sys

import pytest

import lionx.train

# The defining module of each public name (what __getattr__ must return).
DEFINED_IN = {
    'Config': 'config', 'ConfigError': 'fields', 'load_config': 'config',
    'override': 'fields', 'validate': 'config', 'copy': 'config',
    'total_steps': 'config', 'Task': 'tasks.base',
    'register_task': 'tasks.base', 'get_task': 'tasks.base',
    'make_optimizer': 'optimizers', 'Optimizer': 'optimizers',
    'KERNEL_INITS': 'models.vision', 'train_and_evaluate': 'experiment',
    'Hook': 'experiment', 'RunResult': 'experiment',
    'evaluate_checkpoint': 'experiment',
    'NonFiniteLossError': 'experiment', 'compare': 'sweep',
    'SweepResult': 'sweep',
}


def test_every_public_name_is_the_harness_object():
  assert sorted(lionx.train.__all__) == sorted(DEFINED_IN)
  for name, module in DEFINED_IN.items():
    defined = getattr(importlib.import_module(f'lionx.train.{module}'), name)
    assert getattr(lionx.train, name) is defined, name
    assert name in dir(lionx.train)
    if callable(defined):
      assert defined.__doc__, name


def test_an_unknown_name_is_an_attribute_error():
  with pytest.raises(AttributeError, match="'lionx.train' has no attribute "
                     "'train'"):
    lionx.train.train  # pylint: disable=pointless-statement
  assert not hasattr(lionx.train, 'steps_') and 'sweep' not in (
      lionx.train.__all__)


def test_importing_the_namespace_imports_no_harness_module():
  # lionx-train --help and `import lionx.train` stay fast: Flax, orbax,
  # matplotlib, scikit-learn and tqdm load on the first public name used.
  heavy = ('flax', 'orbax', 'matplotlib', 'sklearn', 'tqdm')
  code = ('import sys, lionx.train; '
          f'print([m for m in {heavy!r} if m in sys.modules]); '
          'lionx.train.train_and_evaluate; '
          f'print([m for m in {heavy!r} if m in sys.modules])')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True).stdout.splitlines()
  assert out[0] == '[]'
  assert 'flax' in out[1]
