"""The README stays short, its two commands and its examples stay true, and
its links lead to documentation pages that exist."""

import pathlib
import re
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
README = (ROOT / 'README.md').read_text()
SETUP_HEADING = '## Set-up: two commands'


def _bash_blocks(text):
  return re.findall(r'```bash\n(.*?)```', text, re.S)


def _commands(text):
  return [line for block in _bash_blocks(text) for line in block.splitlines()
          if line.strip() and not line.startswith('#')]


def _setup_commands():
  """The command lines of the README's set-up section."""
  section = README.split(SETUP_HEADING, 1)[1].split('\n## ', 1)[0]
  return _commands(section)


def test_the_readme_is_short():
  lines = README.splitlines()
  assert len(lines) <= 250, f'README.md has {len(lines)} lines, at most 250'


def test_ci_runs_the_readme_test_command():
  test_command = [line for line in _commands(README) if 'pytest' in line]
  assert len(test_command) == 1, test_command
  ci = (ROOT / '.ci' / 'run').read_text().splitlines()
  assert test_command[0] in ci


def test_the_two_setup_commands_name_what_exists():
  train, test = _setup_commands()
  assert 'pytest' in test and 'pytest' not in train
  pyproject = tomllib.loads((ROOT / 'pyproject.toml').read_text())
  extras = pyproject['project']['optional-dependencies']
  scripts = pyproject['project']['scripts']
  for command in (train, test):
    for extra in re.findall(r'-e "\.\[(\w+)\]"', command):
      assert extra in extras, (extra, command)
  script = re.search(r'\.venv/bin/(lionx-[\w-]+)', train).group(1)
  assert script in scripts, script
  config = re.search(r'--config (\S+)', train).group(1)
  assert (ROOT / config).is_file(), config


def test_the_getting_started_page_holds_the_same_two_commands():
  # The page no longer includes the README: it keeps its own copy.
  page = (DOCS / 'getting_started.md').read_text()
  for command in _setup_commands():
    assert command in _commands(page), command


@pytest.mark.slow
def test_python_examples_run():
  blocks = re.findall(r'```python\n(.*?)```', README, re.S)
  assert blocks
  namespace: dict = {}
  for block in blocks:
    exec(compile(block, 'README.md', 'exec'), namespace)  # noqa: S102


def _toctree_entries(page):
  """The pages a page's toctrees name, globs expanded."""
  text = page.read_text()
  entries = []
  for block in re.findall(r'```\{toctree\}\n(.*?)```', text, re.S):
    glob = ':glob:' in block
    for line in block.splitlines():
      line = line.strip()
      if not line or line.startswith(':'):
        continue
      base = page.parent
      if glob and '*' in line:
        entries += [p for pattern in ('.md', '.ipynb', '.rst')
                    for p in base.glob(line + pattern)]
      else:
        entries += [p for p in (base / f'{line}.md', base / f'{line}.ipynb',
                                base / f'{line}.rst') if p.exists()]
  return entries


def _site_pages():
  """Every page reachable from docs/index.md through the toctrees."""
  seen, todo = set(), [DOCS / 'index.md']
  while todo:
    page = todo.pop()
    if page in seen:
      continue
    seen.add(page)
    if page.suffix == '.md':
      todo += _toctree_entries(page)
  return seen


def test_the_toctree_walk_finds_the_pages():
  pages = _site_pages()
  # Pages of every kind: this folder's, the guide's, a globbed notebook.
  for page in ('getting_started.md', 'harness.md', 'guide/lion_k.md',
               'notebooks/01_quickstart.ipynb', 'api/index.md'):
    assert DOCS / page in pages, page
  assert DOCS / 'README.md' not in pages


def test_every_link_of_the_readme_leads_somewhere():
  links = re.findall(r'\]\(([^)\s]+)\)', README)
  local = [link.split('#', 1)[0] for link in links
           if not re.match(r'https?://', link)]
  docs_links = [link for link in local if link.startswith('docs/')]
  # A table of what is in the box, with links into the docs.
  assert len(set(docs_links)) >= 10, docs_links
  pages = _site_pages()
  for link in local:
    path = ROOT / link
    assert path.exists(), link
    if link.startswith('docs/') and path.is_file():
      assert path in pages, f'{link} is not in any toctree of the site'


def test_the_docs_hold_their_content_not_the_readme():
  for page in sorted(DOCS.rglob('*.md')):
    if '_build' in page.parts:
      continue
    assert not re.search(r'\{include\}\s+\S*README\.md', page.read_text()), (
        page)


def test_the_readme_says_what_was_not_run_and_links_the_detail():
  assert '(docs/what_was_run.md)' in README
  assert 'no GPU' in README
