"""Executes notebooks in place, top to bottom, with this interpreter.

Usage (from the repository root)::

  python notebooks/execute.py notebooks/01_quickstart.ipynb [...]

Each notebook runs in a fresh kernel of ``sys.executable`` with
``notebooks/`` as its working directory (as ``tests/test_notebooks.py``
runs them), and is written back with the outputs of that run. Set
``LIONX_NOTEBOOK_FULL=1`` for the full-size runs of notebooks 04 to 07
(``LIONX_NOTEBOOK_SMOKE=1``, the tests' smallest size, is refused: its
outputs are not results).
"""

import os
import pathlib
import sys

import nbclient
import nbformat

HERE = pathlib.Path(__file__).resolve().parent


def execute(path: pathlib.Path) -> None:
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=600, kernel_name='python3',
      resources={'metadata': {'path': str(HERE)}})
  client.execute()
  nbformat.write(nb, path)


if __name__ == '__main__':
  if os.environ.get('LIONX_NOTEBOOK_SMOKE') == '1':
    sys.exit('execute.py: LIONX_NOTEBOOK_SMOKE=1 is the tests\' size, whose '
             'outputs are not results; unset it to write a notebook.')
  for arg in sys.argv[1:]:
    execute(pathlib.Path(arg))
    print(f'executed {arg}')
