"""The import graph of lionx: no cycles (function-level imports count),
the harness's layers import downwards only, and train/ and experiments/
use lionx's public API only."""

import ast
import pathlib

import lionx

ROOT = pathlib.Path(lionx.__file__).parent


def _module(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix('').parts
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join(parts)


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
  """The lionx modules that ``path`` imports anywhere in its body."""
  out = set()
  package = _module(path) if path.name == '__init__.py' else (
      _module(path).rpartition('.')[0])
  tree = ast.parse(path.read_text())
  typing_only = {id(n) for block in ast.walk(tree)
                 if isinstance(block, ast.If)
                 and getattr(block.test, 'id', None) == 'TYPE_CHECKING'
                 for stmt in block.body for n in ast.walk(stmt)}
  for node in ast.walk(tree):
    if id(node) in typing_only:  # annotations only: no import at run time
      continue
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parent = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(parent + ([base] if base else []))
      # `from pkg import mod` depends on pkg.mod; pkg itself only when a
      # name is not a submodule (a package's __init__ may import its
      # children, which import their siblings through the package).
      subs = [f'{base}.{a.name}' for a in node.names]
      names = subs + ([] if all(n in modules for n in subs) else [base])
    else:
      continue
    out |= {n for n in names if n in modules}
  return out


def _graph() -> dict[str, set[str]]:
  paths = list(ROOT.rglob('*.py'))
  modules = {_module(p) for p in paths}
  return {_module(p): _imports(p, modules) - {_module(p)} for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node: str) -> list[str]:
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    state[node] = 2
    stack.pop()
    return []

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return []


def test_the_graph_sees_function_level_imports():
  # The checker must see an import inside a function body.
  graph = _graph()
  assert 'lionx._src.quantized' in graph['lionx._src.transforms']
  assert 'lionx._src.interpolation' in graph['lionx._src.quantized']


def test_lionx_src_has_no_import_cycle():
  graph = {k: v for k, v in _graph().items() if k.startswith('lionx._src')}
  assert _cycle(graph) == []


def test_lionx_has_no_import_cycle():
  graph = _graph()
  assert 'lionx.train.experiment' in graph  # the harness is in the graph
  assert _cycle(graph) == []


# The harness's layers, top to bottom (lionx/train/__init__.py): a module
# may import only modules of lower layers (and its own package's base).
LAYERS = (
    ('cli', 'sample'),
    ('sweep',),
    ('experiment',),
    ('steps', 'diagnostics', 'writers'),
    ('workdir', 'checkpoint', 'plots', 'report'),
    ('config',),
    ('tasks', 'optimizers'),
    ('data', 'models', 'schedules', 'parallel'),
    ('fields', 'registry'),
)


def _layer(module: str):
  """The layer index of a lionx.train module (by its first component)."""
  name = module.removeprefix('lionx.train').lstrip('.').split('.')[0]
  for i, names in enumerate(LAYERS):
    if name in names:
      return i
  return None


def test_harness_layers_import_downwards():
  graph = _graph()
  train = {m for m in graph if m.startswith('lionx.train.')}
  assert {_layer(m) for m in train} >= set(range(len(LAYERS)))
  unplaced = sorted(m for m in train if _layer(m) is None)
  assert not unplaced, f'modules outside LAYERS: {unplaced}'
  upward = []
  for module in sorted(train):
    for target in graph[module]:
      if not target.startswith('lionx.train.'):
        continue
      same_package = target.rpartition('.')[0] == module.rpartition('.')[0]
      if _layer(target) < _layer(module) or (
          _layer(target) == _layer(module) and not same_package
          and target.split('.')[2] != module.split('.')[2]):
        upward.append(f'{module} -> {target}')
  assert not upward, upward


def test_train_and_experiments_use_only_the_public_api():
  graph = _graph()
  private = sorted(
      f'{m} -> {t}' for m, targets in graph.items()
      if m.startswith(('lionx.train', 'lionx.experiments'))
      for t in targets if t.startswith('lionx._src'))
  assert not private, private


def test_cycle_finder_finds_a_cycle():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']


def test_experiments_use_only_the_public_api():
  # experiments/ (the papers' reproductions, beside configs/, not in the
  # wheel) imports lionx's public names and lionx.train's flat namespace
  # (lionx/train/__init__.py), never a harness module or lionx._src.
  import lionx.train  # pylint: disable=g-import-not-at-top
  public = {'lionx': set(lionx.__all__),
            'lionx.train': set(lionx.train.__all__)}
  bad = []
  paths = sorted((ROOT.parent / 'experiments').rglob('*.py'))
  assert len(paths) > 10, paths
  for path in paths:
    aliases = {}  # local name -> 'lionx' | 'lionx.train'
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      where = f'{path.name}:{getattr(node, "lineno", 0)}'
      if isinstance(node, ast.Import):
        for a in node.names:
          if a.name.startswith('lionx') and a.name not in (
              'lionx', 'lionx.train', 'lionx.metrics', 'lionx.theory'):
            bad.append(f'{where} import {a.name}')
          elif a.name in public:
            aliases[a.asname or a.name] = a.name
      elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith(
          'lionx'):
        if node.module not in public:
          bad.append(f'{where} from {node.module} import ...')
          continue
        bad += [f'{where} from {node.module} import {a.name}'
                for a in node.names if a.name not in public[node.module]]
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in aliases):
        module = aliases[node.value.id]
        if node.attr not in public[module] and not (
            module == 'lionx' and node.attr == 'train'):
          bad.append(f'{path.name}:{node.lineno} {module}.{node.attr}')
  assert not bad, bad
