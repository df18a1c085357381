"""The documentation builds warning-free, documents every public name, and
its code runs."""

import json
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


# The internal file numbers of the papers (000, 002, 003) standing alone:
# "003's Figure 3", "(8) of 000", "seed `002`". Not a digit, point, comma,
# sign, slash, colon, '#' or word character on either side, so 0.003, 2003,
# 1,000, 4.000, #000 and step_000 are numbers, not citations.
CITED_BY_FILE = re.compile(
    r'seed `?00[0-9]|(?<![\w.,+\-/:#])00[023](?!\w|[.,]\d)')


def _notebook_text(path):
  """The text a reader sees: every cell's source and its text outputs."""
  parts = []
  for cell in json.loads(path.read_text())['cells']:
    parts.append(''.join(cell['source']))
    for output in cell.get('outputs', []):
      parts.append(''.join(output.get('text', '')))
      parts += [''.join(v) for k, v in output.get('data', {}).items()
                if k.startswith('text/')]
  return '\n'.join(parts)


def _user_facing_files():
  sources = sorted(DOCS.glob('*.md')) + sorted(DOCS.glob('*/*.md'))
  sources = [p for p in sources if p.parent.name != 'notebooks']
  sources += sorted((ROOT / 'lionx').rglob('*.py'))
  sources += [ROOT / 'README.md', ROOT / 'CHANGELOG.md',
              ROOT / 'notebooks' / 'README.md',
              ROOT / 'benchmarks' / 'RESULTS.md']
  sources += sorted((ROOT / 'results').rglob('*.md'))
  sources += sorted((ROOT / 'notebooks').glob('*.ipynb'))
  return sources


def test_papers_are_cited_by_author_not_by_file():
  # Docstrings, pages, notebooks and the experiments' reports: "Chen, Liu,
  # Liang, Liu" or "Dong, Li, Lin", never the seed file's "003" or "000".
  for bad in ("003's Figure 3", 'Figure 4 of 003', '(8) of 000',
              'A.1.1 of 002.', '(003)', 'seed `002`', '000 §3.1'):
    assert CITED_BY_FILE.search(bad), bad
  for fine in ('0.003', '2003', '1,000', '4.000', '#000', 'step_000',
               '1e-3', '0030', 'x003', '50,000', '-0.002'):
    assert not CITED_BY_FILE.search(fine), fine
  sources = _user_facing_files()
  assert len(sources) > 40, sources
  for path in sources:
    text = (_notebook_text(path) if path.suffix == '.ipynb'
            else path.read_text())
    match = CITED_BY_FILE.search(text)
    assert match is None, (path, text[max(match.start() - 60, 0):
                                      match.end() + 20])


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
