"""The README's commands and examples stay true."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def _bash_blocks():
  return re.findall(r'```bash\n(.*?)```', README, re.S)


def test_ci_runs_the_readme_test_command():
  test_command = [line for block in _bash_blocks() for line in block.splitlines()
                  if 'pytest' in line and not line.startswith('#')]
  assert len(test_command) == 1, test_command
  ci = (ROOT / '.ci' / 'run').read_text().splitlines()
  assert test_command[0] in ci


def test_python_examples_run():
  blocks = re.findall(r'```python\n(.*?)```', README, re.S)
  assert blocks
  namespace: dict = {}
  for block in blocks:
    exec(compile(block, 'README.md', 'exec'), namespace)  # noqa: S102
