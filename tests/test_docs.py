"""The documentation builds warning-free, documents every public name, and
its code runs."""

import pathlib
import re
import subprocess
import sys

import pytest
from sphinx.util.inventory import InventoryFile

import lionx
from lionx import metrics, theory

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'


@pytest.fixture(scope='module')
def site(tmp_path_factory):
  """The HTML site, built as Read the Docs does but with warnings as
  errors and every cross-reference into lionx resolving (-W -n)."""
  out = tmp_path_factory.mktemp('html')
  build = subprocess.run(
      [sys.executable, '-m', 'sphinx', '-W', '-n', '--keep-going', '-q',
       '-b', 'html', str(DOCS), str(out)],
      capture_output=True, text=True, cwd=ROOT, check=False)
  assert build.returncode == 0, build.stderr[-5000:]
  assert not build.stderr.strip(), build.stderr[-5000:]
  return out


def _documented(site):
  with open(site / 'objects.inv', 'rb') as f:
    inventory = InventoryFile.load(f, '', lambda base, uri: uri)
  return {name for kind, items in inventory.items()
          if kind.startswith('py:') for name in items}


def test_every_public_name_has_its_api_entry(site):
  documented = _documented(site)
  for module in (lionx, metrics, theory):
    for name in module.__all__:
      if isinstance(getattr(module, name), type(lionx)):
        assert f'{module.__name__}.{name}' in documented
        continue
      assert f'{module.__name__}.{name}' in documented, name
  # The harness: its entry points and extension points.
  for name in ('lionx.train.experiment.train_and_evaluate',
               'lionx.train.config.Config', 'lionx.train.tasks.base.Task',
               'lionx.train.tasks.base.register_task',
               'lionx.train.data.images.register_dataset',
               'lionx.train.data.imagefolder.load_imagefolder',
               'lionx.train.writers.TensorBoard',
               'lionx.train.cli.train_main'):
    assert name in documented, name


def test_notebooks_are_rendered_from_their_outputs(site):
  pages = sorted((site / 'notebooks').glob('*.html'))
  names = {p.stem for p in pages}
  assert names >= {p.stem for p in (ROOT / 'notebooks').glob('*.ipynb')}
  quickstart = (site / 'notebooks' / '01_quickstart.html').read_text()
  # A committed output (an image, and printed text), never re-executed.
  assert '<img' in quickstart and 'cell_output' in quickstart
  assert "nb_execution_mode = 'off'" in (DOCS / 'conf.py').read_text()


def test_papers_are_cited_by_author_not_by_file():
  # The rendered docstrings and pages: "Dong et al. 2024", never "000".
  pattern = re.compile(r'(seed `?00[0-9]|\(00[0-9]\)|\b00[023] §|of 00[023]\b)')
  sources = [DOCS / f for f in ('index.md', 'papers.md')]
  sources += sorted((DOCS / 'guide').glob('*.md'))
  sources += sorted((ROOT / 'lionx' / '_src').glob('*.py'))
  sources += [ROOT / 'lionx' / 'metrics.py', ROOT / 'lionx' / 'theory.py']
  for path in sources:
    assert not pattern.search(path.read_text()), path


def _python_blocks(path):
  return re.findall(r'```python\n(.*?)```', path.read_text(), re.S)


@pytest.mark.parametrize('page', sorted(
    p.relative_to(DOCS).as_posix() for p in
    [DOCS / 'getting_started.md', *(DOCS / 'guide').glob('*.md')]))
def test_the_pages_code_runs(page, capsys):
  blocks = _python_blocks(DOCS / page)
  assert blocks, page
  namespace: dict = {}
  for block in blocks:
    exec(compile(block, page, 'exec'), namespace)  # noqa: S102
  capsys.readouterr()
