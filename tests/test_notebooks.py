"""Every notebook runs top to bottom, and its committed outputs are real.

Each notebook in ``notebooks/`` is executed with nbclient in a kernel that
runs *this* interpreter (``sys.executable``), so the lionx under test is the
one the kernel imports, whatever kernels Jupyter has installed. The working
directory is ``notebooks/``; a notebook that imports the reproductions puts
``..`` (the clone's root, where ``experiments/`` is) on ``sys.path`` itself.
The executed copy is thrown away: the committed file keeps the outputs of
the run that produced it.

Each kernel is shut down as soon as its notebook has run (or failed), so
that at most one kernel (up to 1.3 GB for the training notebooks) is alive
at a time in each pytest process (one per worker with ``-n``), not one per
notebook until pytest exits.
"""

import json
import os
import pathlib
import sys

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / 'notebooks'
EXPECTED = (
    '01_quickstart.ipynb',
    '02_convergence_rate.ipynb',
    '03_lion_k_constraints.ipynb',
    '04_norm_ratio_sqrt_d.ipynb',
    '05_weight_confinement.ipynb',
    '06_language_models.ipynb',
    '07_lion_k_frontier.ipynb',
)
TIMEOUT = 300  # seconds per cell; a notebook takes 10-200 s on 2 cores
KERNEL = 'lionx-pytest'


def _make_manager(directory: pathlib.Path) -> KernelManager:
  """A kernel manager whose only kernel runs ``sys.executable`` (one
  notebook each: shutting a kernel down closes its manager)."""
  spec = directory / 'kernels' / KERNEL
  spec.mkdir(parents=True)
  (spec / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f',
               '{connection_file}'],
      'display_name': 'lionx (pytest interpreter)',
      'language': 'python',
  }))
  specs = KernelSpecManager(kernel_dirs=[str(spec.parent)])
  return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


@pytest.fixture
def kernel_manager(tmp_path):
  """A kernel manager for one notebook; its kernel is shut down after the
  test whatever happened."""
  manager = _make_manager(tmp_path)
  yield manager
  if manager.has_kernel:
    manager.shutdown_kernel(now=True)


def _execute(nb, kernel_manager):
  """Runs ``nb`` in a new kernel of ``kernel_manager``, then shuts the
  kernel down and closes the client's channels, also when a cell fails.

  nbclient leaves a kernel running when it is handed the kernel manager
  (``km=``) unless told ``cleanup_kc=True``.
  """
  client = nbclient.NotebookClient(
      nb, km=kernel_manager, timeout=TIMEOUT,
      resources={'metadata': {'path': str(NOTEBOOKS)}})
  return client.execute(cleanup_kc=True)


def _alive(pid: int) -> bool:
  """Whether process ``pid`` exists and is not a zombie (which holds no
  memory)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  status = pathlib.Path(f'/proc/{pid}/status')
  try:
    state = next((line for line in status.read_text().splitlines()
                  if line.startswith('State:')), '')
  except OSError:
    return not status.parent.parent.exists()  # no /proc: trust os.kill
  return 'zombie' not in state and '(dead)' not in state


def _outputs(nb, output_type=None):
  return [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
          if output_type is None or o.output_type == output_type]


def test_the_notebooks_are_there():
  assert sorted(p.name for p in NOTEBOOKS.glob('*.ipynb')) == list(EXPECTED)


def test_the_kernel_runs_this_interpreter(kernel_manager):
  nb = nbformat.v4.new_notebook()
  nb.cells = [nbformat.v4.new_code_cell(
      'import sys, lionx; print(sys.executable); print(lionx.__file__)')]
  _execute(nb, kernel_manager)
  executable, lionx_file = _outputs(nb, 'stream')[0].text.split()
  import lionx  # pylint: disable=g-import-not-at-top
  assert pathlib.Path(executable).resolve() == pathlib.Path(
      sys.executable).resolve()
  assert pathlib.Path(lionx_file).resolve() == pathlib.Path(
      lionx.__file__).resolve()


def test_a_failing_cell_fails(kernel_manager):
  nb = nbformat.v4.new_notebook()
  nb.cells = [nbformat.v4.new_code_cell('1 / 0')]
  with pytest.raises(nbclient.exceptions.CellExecutionError,
                     match='ZeroDivisionError'):
    _execute(nb, kernel_manager)
  assert not kernel_manager.has_kernel  # shut down despite the error


def _kernel_pid(kernel_manager) -> int:
  nb = nbformat.v4.new_notebook()
  nb.cells = [nbformat.v4.new_code_cell('import os; print(os.getpid())')]
  _execute(nb, kernel_manager)
  return int(_outputs(nb, 'stream')[0].text)


def test_the_kernel_is_gone_after_the_notebook(kernel_manager):
  pid = _kernel_pid(kernel_manager)
  assert pid != os.getpid()
  assert not kernel_manager.has_kernel
  assert not _alive(pid), f'kernel process {pid} still running'


def test_one_kernel_at_a_time(tmp_path):
  # Two notebooks in a row: the first kernel is gone before the second
  # starts, so kernels never pile up over the suite.
  first = _kernel_pid(_make_manager(tmp_path / 'first'))
  assert not _alive(first)
  second = _kernel_pid(_make_manager(tmp_path / 'second'))
  assert first != second
  assert not _alive(second)


def test_alive_sees_a_running_process():
  # The check above must be able to fail: this process is alive.
  assert _alive(os.getpid())


@pytest.mark.parametrize('name', EXPECTED)
def test_committed_outputs_are_from_a_clean_run(name):
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  code = [c for c in nb.cells if c.cell_type == 'code']
  # Executed in order, top to bottom, in one session.
  assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
  assert not _outputs(nb, 'error')
  assert any('image/png' in o.get('data', {}) for o in _outputs(nb))
  source = '\n'.join(c.source for c in code)
  assert 'import lionx' in source or 'from lionx' in source
  # The reproductions are the repository's experiments/, not lionx's.
  assert 'lionx.experiments' not in source
  if 'from experiments import' in source:
    assert "sys.path.insert(0, os.path.abspath('..'))" in source


@pytest.mark.slow  # 10 s to 3 min a notebook on 2 cores
@pytest.mark.parametrize('name', EXPECTED)
def test_notebook_runs(name, kernel_manager, monkeypatch):
  # The smallest size that runs every cell (notebooks 04 to 07 read it);
  # the committed outputs are those of the notebooks' own size.
  monkeypatch.setenv('LIONX_NOTEBOOK_SMOKE', '1')
  path = NOTEBOOKS / name
  committed = path.read_bytes()
  nb = nbformat.read(path, as_version=4)
  _execute(nb, kernel_manager)  # raises CellExecutionError on any error
  assert not _outputs(nb, 'error')
  assert any('image/png' in o.get('data', {}) for o in _outputs(nb))
  assert path.read_bytes() == committed  # nothing written back


def test_execute_refuses_the_smoke_size():
  # Its outputs are not results: nothing is executed or written.
  import subprocess  # pylint: disable=g-import-not-at-top
  path = NOTEBOOKS / EXPECTED[0]
  committed = path.read_bytes()
  run = subprocess.run(
      [sys.executable, str(NOTEBOOKS / 'execute.py'), str(path)],
      capture_output=True, text=True, timeout=120,
      env={**os.environ, 'LIONX_NOTEBOOK_SMOKE': '1'})
  assert run.returncode == 1
  assert 'LIONX_NOTEBOOK_SMOKE=1' in run.stderr and 'unset it' in run.stderr
  assert path.read_bytes() == committed
