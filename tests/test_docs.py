"""The documentation builds warning-free, documents every public name, and
its code runs."""

import json
import pathlib
import re
import shlex
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


@pytest.mark.slow
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


@pytest.mark.slow
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
  sources += sorted((ROOT / 'experiments').rglob('*.py'))
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


# The pages whose Python blocks run, in order, as one program each.
PAGES_WITH_CODE = ('getting_started.md', 'optimizers.md', 'diagnostics.md',
                   'performance.md')


@pytest.mark.slow
@pytest.mark.parametrize('page', sorted(
    [*PAGES_WITH_CODE,
     *(p.relative_to(DOCS).as_posix() for p in (DOCS / 'guide').glob('*.md'))]))
def test_the_pages_code_runs(page, capsys):
  blocks = _python_blocks(DOCS / page)
  assert blocks, page
  namespace: dict = {}
  for block in blocks:
    exec(compile(block, page, 'exec'), namespace)  # noqa: S102
  capsys.readouterr()


def test_every_page_with_python_code_runs_in_the_suite():
  pages = sorted(DOCS.glob('*.md')) + sorted((DOCS / 'guide').glob('*.md'))
  with_code = {p.relative_to(DOCS).as_posix() for p in pages
               if _python_blocks(p)}
  tested = set(PAGES_WITH_CODE) | {
      p.relative_to(DOCS).as_posix() for p in (DOCS / 'guide').glob('*.md')}
  assert with_code <= tested, with_code - tested


# --- the commands of the README and of the pages ---------------------------

# Programs the commands may run besides lionx's own (their existence is
# not lionx's to check).
OTHER_PROGRAMS = {'python3', 'tensorboard', 'sphinx-build', 'export', 'pip'}


def _pyproject_table(name):
  """``key = ...`` lines of one table of pyproject.toml (no tomllib on
  Python 3.10)."""
  text = (ROOT / 'pyproject.toml').read_text()
  body = text.split(f'\n[{name}]\n', 1)[1].split('\n[', 1)[0]
  return set(re.findall(r'^([\w-]+)\s*=', body, re.M))


def console_scripts():
  return _pyproject_table('project.scripts')


def extras():
  return _pyproject_table('project.optional-dependencies')


def _shell_commands(path):
  """Each command of a page's bash blocks, continuation lines joined, split
  at ``&&``, comments dropped."""
  commands = []
  for block in re.findall(r'```bash\n(.*?)```', path.read_text(), re.S):
    block = block.replace('\\\n', ' ')
    for line in block.splitlines():
      line = line.split(' #', 1)[0].strip()
      if line and not line.startswith('#'):
        commands += [c.strip() for c in line.split('&&')]
  return commands


def _experiment_module(name):
  """The file of ``python -m experiments.NAME`` (the top-level package
  beside configs/) and the package's shared ``_*.py`` modules."""
  folder = ROOT / 'experiments'
  path = folder / f'{name}.py'
  if not path.exists() and (folder / name / '__main__.py').exists():
    path = folder / name / '__main__.py'
  return path, sorted(folder.glob('_*.py'))


def _source(paths):
  return ''.join(p.read_text() for p in paths)


def _check_flags(command, flags, sources):
  """Each flag is an option of the sources: a quoted argparse name in
  Python, a case pattern or word in a shell script."""
  text = _source(sources)
  for flag in flags:
    found = (re.search(rf'(?<![\w-]){flag}(?![\w-])', text)
             if sources[0].suffix == '.sh' else f"'{flag}'" in text)
    assert found, (
        f'{command!r}: {flag} is not an option of {[s.name for s in sources]}')


def _parse(words, sources):
  """(flags, overrides, config) of a command line; a flag takes the next
  word as its value unless its parser stores true or false."""
  text = _source(sources)
  flags, overrides, config = [], [], None
  items = iter(words)
  for word in items:
    if word.startswith('--config.'):  # the Flax examples' override flags
      overrides.append(word[len('--config.'):])
    elif word.startswith('-'):
      flag = word.split('=', 1)[0]
      flags.append(flag)
      takes_value = '=' not in word and not re.search(
          rf"'{flag}',\s*action='store_(true|false)'", text)
      value = next(items, None) if takes_value else None
      if flag == '--config':
        config = value
    elif '=' in word:
      overrides.append(word)
  return flags, overrides, config


def _check_config(config, overrides):
  from lionx.train.config import load_config  # pylint: disable=g-import-not-at-top
  load_config(f'{ROOT}/{config}', tuple(overrides))


def _check_command(command):
  words = shlex.split(command)
  program = words[0].rsplit('/', 1)[-1]
  if program in ('lionx-train', 'lionx-compare'):
    assert program in console_scripts(), command
    cli = [ROOT / 'lionx' / 'train' / 'cli.py']
    flags, overrides, config = _parse(words[1:], cli)
    _check_flags(command, flags, cli)
    _check_config(config, overrides)
  elif program == 'lionx-sample':
    assert program in console_scripts(), command
    source = [ROOT / 'lionx' / 'train' / 'sample.py']
    flags, overrides, _ = _parse(words[1:], source)
    assert not overrides, command
    _check_flags(command, flags, source)
  elif program in ('python', 'python3') and words[1] == '-m':
    module = words[2]
    if module.startswith('experiments.'):
      path, shared = _experiment_module(module.split('.', 1)[1])
      assert path.is_file(), (command, path)
      flags, overrides, config = _parse(words[3:], [path, *shared])
      _check_flags(command, flags, [path, *shared])
      if config is not None:
        _check_config(config, overrides)
    else:
      assert module in ('pytest', 'venv'), command
  elif program in ('python', 'python3', 'bash'):
    path = ROOT / words[1]
    assert path.is_file(), command
    sources = [path, *path.parent.glob('_*.py')]
    flags, _, config = _parse(words[2:], sources)
    _check_flags(command, flags, sources)
    if config is not None:
      assert (ROOT / config.split(':', 1)[0]).is_file(), command
  elif program == 'pip':
    for extra in re.findall(r'\.\[([\w,]+)\]', command):
      for name in extra.split(','):
        assert name in extras(), command
  else:
    assert program in OTHER_PROGRAMS, f'{command!r}: unknown program'


def _inline_commands(path):
  """Commands quoted in the prose (`python ...`, `lionx-compare ...`), the
  ones whose numbers a page reports; those with a placeholder (NAME,
  HOST:PORT) are patterns, not commands."""
  commands = []
  prose = re.sub(r'```.*?```', '', path.read_text(), flags=re.S)
  for match in re.finditer(
      r'`((?:python3?|lionx-(?:train|compare|sample)|bash)\s[^`]+)`', prose):
    command = ' '.join(match.group(1).split())
    if not re.search(r'\b[A-Z][A-Z_]*\b', command):
      commands.append(command)
  return commands


def _pages_with_commands():
  pages = [ROOT / 'README.md', *sorted(DOCS.glob('*.md')),
           *sorted((DOCS / 'guide').glob('*.md'))]
  return [p for p in pages if _shell_commands(p) or _inline_commands(p)]


def test_the_command_checks_catch_what_does_not_exist():
  for bad in ('python -m experiments.no_such_experiment --out x',
              'python -m experiments.toy_rate --out x --no-such-flag 1',
              'lionx-toy-rate --out results/toy_rate',
              'lionx-train --config configs/no_such.py --workdir w',
              'lionx-train --config configs/default.py --workdir w '
              'optimizer.no_such_field=1',
              'lionx-sample --workdir w --prompt a --no-such-flag 1',
              'python benchmarks/no_such.py',
              'python benchmarks/lm_step.py --no-such-flag',
              'bash benchmarks/gpu.sh --no-such-flag',
              'pip install -e ".[no_such_extra]"',
              'make everything'):
    with pytest.raises(Exception):
      _check_command(bad)


@pytest.mark.parametrize('page', [
    p.relative_to(ROOT).as_posix() for p in _pages_with_commands()])
def test_the_commands_name_what_exists(page):
  # Scripts, experiment modules, their flags, config files, config fields
  # and extras: a command of the README or the docs that names something
  # gone fails here, not in a reader's shell.
  for command in _shell_commands(ROOT / page) + _inline_commands(ROOT / page):
    _check_command(command)


def test_no_page_names_the_old_experiment_commands():
  # The reproductions left the wheel: python -m experiments.NAME from a
  # clone, and their console scripts are gone.
  old = re.compile(r'lionx\.experiments|lionx-(toy-rate|lion-k-2d|weight-'
                   r'confinement|weight-decay-sweep|lion-lp-networks|lm-)')
  for page in [ROOT / 'README.md', *sorted(DOCS.rglob('*.md'))]:
    if '_build' in page.parts or '_generated' in page.parts:
      continue
    match = old.search(page.read_text())
    assert match is None, (page, match.group(0))
