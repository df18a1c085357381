"""Sphinx configuration of lionx's documentation (Sphinx + myst-nb).

Build with ``sphinx-build -W -n -b html docs docs/_build/html`` (see
docs/README.md). The API pages are generated at build time from
``lionx.__all__``, ``lionx.metrics.__all__``, ``lionx.theory.__all__`` and
the modules of ``lionx.train`` (``docs/api/_generated``), so that names
added later are documented, and checked, without editing these files. The
notebooks are rendered from their committed outputs, never executed.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import pkgutil
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import lionx  # noqa: E402
from sphinx.pycode import ModuleAnalyzer  # noqa: E402

project = 'lionx'
author = 'The lionx authors'
copyright = 'the lionx authors'  # pylint: disable=redefined-builtin
release = version = lionx.__version__

extensions = [
    'myst_nb',
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'sphinx.ext.viewcode',
]
# Links into the docs of Python, NumPy, JAX, optax and Flax where the
# inventories can be fetched (Read the Docs); this machine builds offline.
if os.environ.get('READTHEDOCS'):
  extensions.append('sphinx.ext.intersphinx')
  intersphinx_mapping = {
      'python': ('https://docs.python.org/3', None),
      'numpy': ('https://numpy.org/doc/stable', None),
      'jax': ('https://docs.jax.dev/en/latest', None),
      'optax': ('https://optax.readthedocs.io/en/latest', None),
      'flax': ('https://flax.readthedocs.io/en/latest', None),
  }

source_suffix = {'.rst': 'restructuredtext', '.md': 'myst-nb',
                 '.ipynb': 'myst-nb'}
exclude_patterns = ['_build', 'README.md', 'notebooks/README.md',
                    '**.ipynb_checkpoints']
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence']
myst_heading_anchors = 3
# The notebooks keep the outputs of a real execution (tests/test_notebooks.py
# runs them); the docs never execute them.
nb_execution_mode = 'off'

html_theme = 'sphinx_book_theme'
html_title = f'lionx {release}'
html_theme_options = {'show_toc_level': 2}

# API pages.
autodoc_default_options = {'members': True, 'member-order': 'bysource',
                           'show-inheritance': False}
autodoc_typehints = 'signature'
autodoc_preserve_defaults = True
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Every cross-reference into lionx must resolve (nitpicky, -n); those into
# other packages are links on Read the Docs and plain text offline.
nitpicky = True
EXTERNAL = ('jax', 'jaxlib', 'numpy', 'np', 'optax', 'chex', 'flax', 'nnx',
            'orbax', 'typing', 'collections', 'pathlib', 'dataclasses',
            'abc', 'grain', 'enum', 'os', 'argparse', 'types', 'Ellipsis')
nitpick_ignore_regex = [
    ('py:.*', rf'({"|".join(EXTERNAL)})(\..*)?'),
    # Builtins and typing's plain names, linked by intersphinx online.
    ('py:.*', r'(int|float|bool|str|bytes|complex|object|tuple|list|dict|set|'
     r'frozenset|type|None|NoneType|callable|Callable|Any|Optional|Union|'
     r'Sequence|Mapping|Iterable|Iterator|NamedTuple|ClassVar|Literal|'
     r'TypeVar|Protocol|Generator|ValueError|TypeError|OSError|'
     r'RuntimeError|KeyError|Exception|BaseException|array|Array|'
     r'ArrayLike|PyTree|Numeric|ScalarOrSchedule|Schedule|Params|Updates|'
     r'OptState|DTypeLike|dtype|ndarray|Path|PathLike|Mesh|NamedSharding|'
     r'PartitionSpec|Device|Module|Optimizer|Rngs|Field|T|S)'),
    # Private type aliases of lionx's annotations, and generics that Sphinx
    # splits at the comma of a string annotation.
    ('py:class', r'(base\.)?(Mask|Scalar|Metrics|Batch|Row|Loader|Spec|LossFn|'
     r'Curves|jnp\..*|tqdm\..*|(tuple|dict|list|set|type)\[.*)'),
]


def _public_alias(app, env, node, contnode):
  """``lionx._src.x.Name`` (as annotations name a type) -> ``lionx.Name``,
  ``lionx.metrics.Name`` or ``lionx.theory.Name``, where that is public."""
  target = node.get('reftarget', '')
  if node.get('refdomain') != 'py' or not (
      target.startswith('lionx._src.') or '.' not in target):
    return None
  name = target.rsplit('.', 1)[-1]
  domain = env.get_domain('py')
  for public in ('lionx', 'lionx.metrics', 'lionx.theory',
                 'lionx.distributed', 'lionx.quantized'):
    if name in getattr(importlib.import_module(public), '__all__', ()):
      return domain.resolve_xref(env, node['refdoc'], app.builder,
                                 node['reftype'], f'{public}.{name}', node,
                                 contnode)
  return None


# --- generated API pages ------------------------------------------------------

GENERATED = DOCS / 'api' / '_generated'


def _names(module) -> tuple[list[str], list[str]]:
  """(modules, other names) of ``module.__all__``, in its order."""
  mods, names = [], []
  for name in module.__all__:
    (mods if isinstance(getattr(module, name), type(lionx)) else
     names).append(name)
  return mods, names


def _data_doc(module, name: str) -> list[str]:
  """The ``#:`` comment (or docstring) of ``name`` where it is defined."""
  obj = getattr(module, name)
  for sub in sorted(sys.modules):
    if not sub.startswith(module.__name__ + '.'):
      continue
    if getattr(sys.modules[sub], name, None) is not obj:
      continue
    try:
      docs = ModuleAnalyzer.for_module(sub).find_attr_docs()
    except Exception:  # pylint: disable=broad-except
      continue
    if ('', name) in docs:
      return list(docs['', name])
  return []


def _flat_page(module_name: str, title: str, intro: str) -> str:
  """One page for a flat namespace: a summary table of its functions and
  classes, then every name of its ``__all__``."""
  module = importlib.import_module(module_name)
  _, names = _names(module)
  data = [n for n in names if not callable(getattr(module, n))]
  lines = [title, '=' * len(title), '', intro, '',
           f'.. currentmodule:: {module_name}', '', '.. autosummary::', '']
  lines += [f'   {name}' for name in names if name not in data]
  lines += ['', f'.. automodule:: {module_name}', '   :no-members:', '']
  for name in names:
    obj = getattr(module, name)
    if name in data:  # documented from its #: comment, value if a scalar
      lines.append(f'.. py:data:: {name}')
      if isinstance(obj, (int, float, str)):
        lines.append(f'   :value: {obj!r}')
      lines += [''] + [f'   {line}' for line in _data_doc(module, name)]
    else:
      kind = 'autoclass' if isinstance(obj, type) else 'autofunction'
      lines.append(f'.. {kind}:: {name}')
    lines.append('')
  return '\n'.join(lines)


def _train_modules() -> list[str]:
  import lionx.train  # pylint: disable=g-import-not-at-top
  names = ['lionx.train']
  names += [m.name for m in pkgutil.walk_packages(lionx.train.__path__,
                                                   'lionx.train.')
            if not m.name.rsplit('.', 1)[-1].startswith('_')]
  return names


def _write(path: pathlib.Path, text: str) -> None:
  if not path.exists() or path.read_text() != text:
    path.write_text(text)


def generate_api(app=None) -> None:
  """Writes docs/api/_generated/*.rst from the packages' public names."""
  del app
  GENERATED.mkdir(parents=True, exist_ok=True)
  pages = {
      'lionx': _flat_page(
          'lionx', 'lionx', 'The transforms, reshapers, optimizers and '
          'their states: every name of ``lionx.__all__``.'),
      'lionx.metrics': _flat_page(
          'lionx.metrics', 'lionx.metrics',
          'Diagnostics of the papers as pure functions of pytrees.'),
      'lionx.theory': _flat_page(
          'lionx.theory', 'lionx.theory',
          'The rates, bounds and schedules of the papers.'),
      'lionx.checks': _flat_page(
          'lionx.checks', 'lionx.checks',
          'The argument checks of the factories, for your own transforms.'),
  }
  for name in _train_modules():
    title = f'``{name}``'
    # Members defined in the module itself: a re-exported name (e.g.
    # ConfigError in config) is documented where it is defined.
    pages[name] = '\n'.join([
        title, '=' * len(title), '', f'.. automodule:: {name}',
        '   :members:', '   :ignore-module-all:', ''])
  for old in GENERATED.glob('*.rst'):
    if old.stem not in pages:
      old.unlink()
  for name, text in pages.items():
    _write(GENERATED / f'{name}.rst', text)


def setup(app):
  app.connect('builder-inited', generate_api)
  app.connect('missing-reference', _public_alias)
