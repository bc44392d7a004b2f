"""BUILD is generated from the Python imports, matches the tree, and is a graph
Bazel accepts.

Bazel cannot run `py_test` offline here, so pytest is the runner; this test
keeps BUILD from drifting: every module under tfp_flowpp/, every script in
bin/ and bench/, and every test file gets a target whose deps are exactly its
imports. After adding or changing imports run

    UPDATE_BUILD=1 python -m pytest tests/test_build_sync.py

Dependencies are module-level, the way TFP's BUILD files are written: a module
that imports ``from tfp_flowpp.bijectors import coupling`` (or
``from tfp_flowpp.bijectors.coupling import X``) depends on
``:tfp_flowpp_bijectors_coupling``, never on the package's ``__init__``
target; only an import of a name the package ``__init__`` defines
(``from tfp_flowpp import bijectors``) depends on the package target. Each
target puts only its own folder on ``sys.path`` (``imports``): ``.`` for
tfp_flowpp, ``bin``, ``bench`` or ``tests`` for the others.

`build_problems` checks the rendered file as Bazel would see it: Starlark
syntax (as far as Python's `ast` can tell), unique target names, every
``:dep`` a defined ``py_library``, no dependency cycle, and the layering
tfp_flowpp < bin < bench < tests (a target depends only on its own layer and
the ones before it, so no library depends on a tool, bench or test target).
"""

import ast
import collections
import os
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Top-level import name -> PyPI distribution (rules_python `requirement`).
_THIRD_PARTY = {
    'absl': 'absl-py',
    'constriction': 'constriction',
    'matplotlib': 'matplotlib',
    'numpy': 'numpy',
    'PIL': 'pillow',
    'pytest': 'pytest',
    'scipy': 'scipy',
    'sklearn': 'scikit-learn',
    'tensorflow': 'tensorflow',
    'tensorflow_datasets': 'tensorflow-datasets',
    'tensorflow_probability': 'tensorflow-probability',
    'tf_keras': 'tf-keras',
}

# Source folders in dependency order: a target may depend on targets of its
# own folder and of the folders before it.
_LAYERS = ('tfp_flowpp', 'bin', 'bench', 'tests')
# The sys.path entry (Bazel `imports`, relative to this BUILD) of each folder:
# tfp_flowpp is a package imported from the repository root; the modules of
# the other folders are imported by their bare names.
_IMPORT_ROOT = {'tfp_flowpp': '.', 'bin': 'bin', 'bench': 'bench',
                'tests': 'tests'}
_RULES = ('py_binary', 'py_library', 'py_test')

_HEADER = '''\
# Bazel targets for tfp_flowpp. GENERATED from the Python imports by
# tests/test_build_sync.py — do not edit by hand; after adding a module run
#   UPDATE_BUILD=1 python -m pytest tests/test_build_sync.py
# pytest is the test runner (Bazel cannot fetch rules_python/pip offline).

load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")
load("@pypi//:requirements.bzl", "requirement")

package(default_visibility = ["//visibility:public"])
'''

# Generating BUILD -------------------------------------------------------------


def _sources():
  """(kind, path) for every source file that needs a target."""
  out = []
  for path in sorted((ROOT / 'tfp_flowpp').rglob('*.py')):
    out.append(('py_library', path))
  for folder in ('bin', 'bench'):
    for path in sorted((ROOT / folder).glob('*.py')):
      kind = 'py_library' if path.stem.endswith(
          '_flags') or path.stem.startswith('_') else 'py_binary'
      out.append((kind, path))
  for path in sorted((ROOT / 'tests').glob('*.py')):
    kind = 'py_test' if path.name.startswith('test_') else 'py_library'
    out.append((kind, path))
  return out


def _target_name(path):
  rel = path.relative_to(ROOT).with_suffix('')
  parts = rel.parts[:-1] if rel.name == '__init__' else rel.parts
  return '_'.join(parts)


def _module_name(path):
  """The dotted name `path` is imported by."""
  parts = list(path.relative_to(ROOT).with_suffix('').parts)
  if parts[0] != 'tfp_flowpp':
    parts = parts[1:]  # bin/, bench/, tests/ are on sys.path, not packages.
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join(parts)


def _module_index(sources):
  """Dotted module name (as importable) -> target name."""
  return {_module_name(path): _target_name(path) for _, path in sources}


def _imported_names(path):
  """Dotted names `path` imports, most specific first per import.

  Each entry is a tuple of candidates: ``from M import a`` gives ``('M.a',
  'M')`` (``a`` may be a module, else it is a name defined in ``M``), ``import
  a.b`` gives ``('a.b',)``. Relative imports are resolved against the file's
  package.
  """
  tree = ast.parse(path.read_text(), filename=str(path))
  package = _module_name(path).split('.')
  if path.name != '__init__.py':
    package = package[:-1]
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update((alias.name,) for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      module = node.module or ''
      if node.level:
        base = package[:len(package) - node.level + 1]
        module = '.'.join(base + ([module] if module else []))
      for alias in node.names:
        names.add((f'{module}.{alias.name}', module) if alias.name != '*' else
                  (module,))
  return names


def _deps(path, index):
  """(internal target names, PyPI distributions) that `path` imports."""
  internal, external = set(), set()
  own = _target_name(path)
  local_tops = {name.split('.')[0] for name in index}
  for candidates in _imported_names(path):
    top = candidates[-1].split('.')[0]
    if top in _THIRD_PARTY:
      external.add(_THIRD_PARTY[top])
    elif top in local_tops:
      target = _resolve(candidates, index)
      if target != own:
        internal.add(target)
    elif top not in sys.stdlib_module_names:
      raise ValueError(
          f'{path.relative_to(ROOT)} imports {candidates[-1]!r}: not a module '
          'of this tree nor of the standard library; add its PyPI '
          'distribution to _THIRD_PARTY in tests/test_build_sync.py.')
  return sorted(internal), sorted(external)


def _resolve(candidates, index):
  """Target of the first candidate that is a module, else its longest prefix."""
  exact, *rest = candidates
  if exact in index:
    return index[exact]
  parts = (rest[0] if rest else exact).split('.')
  for n in range(len(parts), 0, -1):
    target = index.get('.'.join(parts[:n]))
    if target:
      return target
  raise ValueError(f'Cannot resolve import {exact!r}.')


def _data_files(path):
  """Package files (not Python) a tfp_flowpp module names: Bazel ``data``.

  E.g. the C++ source `networks/fused_attention.py` compiles at run time.
  """
  if path.relative_to(ROOT).parts[0] != 'tfp_flowpp':
    return []
  text = path.read_text()
  return sorted(
      f.relative_to(ROOT).as_posix()
      for f in (ROOT / 'tfp_flowpp').rglob('*')
      if f.is_file() and f.suffix not in ('.py', '.pyc') and
      '__pycache__' not in f.parts and f"'{f.name}'" in text)


def render_build():
  sources = _sources()
  index = _module_index(sources)
  blocks = [_HEADER]
  for kind, path in sources:
    internal, external = _deps(path, index)
    rel = path.relative_to(ROOT).as_posix()
    lines = [
        f'{kind}(', f'    name = "{_target_name(path)}",',
        f'    srcs = ["{rel}"],'
    ]
    if kind == 'py_test':
      lines.append('    size = "medium",')
    if kind in ('py_binary', 'py_test'):
      lines.append(f'    main = "{rel}",')
    data = _data_files(path)
    if data:
      lines.append('    data = [' + ', '.join(f'"{d}"' for d in data) + '],')
    lines.append(f'    imports = ["{_IMPORT_ROOT[rel.split("/")[0]]}"],')
    deps = [f'":{t}"' for t in internal
           ] + [f'requirement("{r}")' for r in external]
    if deps:
      lines.append('    deps = [')
      lines += [f'        {d},' for d in deps]
      lines.append('    ],')
    lines.append(')')
    blocks.append('\n'.join(lines))
  return '\n\n'.join(blocks) + '\n'


# Checking BUILD as Bazel would ---------------------------------------------------

_Target = collections.namedtuple('_Target', 'kind line attrs')


def _value(node):
  """A Starlark literal: str, list, or ``requirement("dist")``."""
  if isinstance(node, ast.Constant) and isinstance(node.value, str):
    return node.value
  if isinstance(node, ast.List):
    return [_value(item) for item in node.elts]
  if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and
      node.func.id == 'requirement' and len(node.args) == 1 and
      not node.keywords):
    return ('requirement', _value(node.args[0]))
  raise ValueError(f'line {node.lineno}: unsupported value '
                   f'{ast.unparse(node)!r}')


def _parse_targets(text, problems):
  """name -> _Target of the rule calls in a BUILD file."""
  try:
    tree = ast.parse(text)
  except SyntaxError as e:
    problems.append(f'line {e.lineno}: syntax error: {e.msg}')
    return {}
  targets = {}
  for node in tree.body:
    call = node.value if isinstance(node, ast.Expr) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
      problems.append(f'line {node.lineno}: not a rule call')
      continue
    kind = call.func.id
    if kind in ('load', 'package'):
      continue
    if kind not in _RULES or call.args:
      problems.append(f'line {node.lineno}: expected {"/".join(_RULES)} '
                      f'with keyword arguments, got {kind}(...)')
      continue
    try:
      attrs = {kw.arg: _value(kw.value) for kw in call.keywords}
    except ValueError as e:
      problems.append(str(e))
      continue
    name = attrs.get('name')
    if not isinstance(name, str) or not re.fullmatch(r'[A-Za-z0-9_.+-]+',
                                                     name):
      problems.append(f'line {node.lineno}: bad target name {name!r}')
    elif name in targets:
      problems.append(f'line {node.lineno}: duplicate target {name}')
    else:
      targets[name] = _Target(kind, node.lineno, attrs)
  return targets


def _layer(target):
  srcs = target.attrs.get('srcs') or ['?']
  return srcs[0].split('/')[0]


def _cycles(graph):
  """One shortest cycle per strongly connected component (Tarjan)."""
  index, low, on_stack, stack, components = {}, {}, set(), [], []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for dep in graph[node]:
      if dep not in index:
        visit(dep)
        low[node] = min(low[node], low[dep])
      elif dep in on_stack:
        low[node] = min(low[node], index[dep])
    if low[node] == index[node]:
      component = set()
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.add(member)
        if member == node:
          break
      if len(component) > 1 or node in graph[node]:
        components.append(component)

  for node in sorted(graph):
    if node not in index:
      visit(node)
  cycles = []
  for component in components:
    start = min(component)
    parents, frontier = {start: None}, collections.deque([start])
    while frontier:
      node = frontier.popleft()
      if start in graph[node]:
        path = [node]
        while parents[path[-1]] is not None:
          path.append(parents[path[-1]])
        cycles.append(path[::-1] + [start])
        break
      for dep in sorted(graph[node] & component):
        if dep not in parents:
          parents[dep] = node
          frontier.append(dep)
  return sorted(cycles)


def build_problems(text):
  """Why Bazel would reject BUILD `text`, or where it breaks the layering."""
  problems = []
  targets = _parse_targets(text, problems)
  distributions = set(_THIRD_PARTY.values())
  graph = {}
  for name, target in sorted(targets.items()):
    attrs = target.attrs
    where = f'{name} (line {target.line})'
    srcs = attrs.get('srcs')
    if not (isinstance(srcs, list) and srcs and
            all(isinstance(s, str) for s in srcs)):
      problems.append(f'{where}: srcs must be a non-empty list of files')
      srcs = []
    if target.kind != 'py_library' and attrs.get('main') not in srcs:
      problems.append(f'{where}: main must be one of its srcs')
    layer = _layer(target)
    if layer not in _LAYERS:
      problems.append(f'{where}: srcs outside {", ".join(_LAYERS)}')
    elif attrs.get('imports', []) not in ([], [_IMPORT_ROOT[layer]]):
      problems.append(
          f'{where}: imports = {attrs["imports"]}; a {layer} target may put '
          f'only "{_IMPORT_ROOT[layer]}" on sys.path')
    data = attrs.get('data', [])
    if not (isinstance(data, list) and all(isinstance(d, str) for d in data)):
      problems.append(f'{where}: data must be a list of files')
      data = []
    for missing in sorted(d for d in data if not (ROOT / d).is_file()):
      problems.append(f'{where}: data file {missing} does not exist')
    graph[name] = set()
    for dep in attrs.get('deps', []):
      if isinstance(dep, tuple):
        if dep[1] not in distributions:
          problems.append(f'{where}: unknown requirement("{dep[1]}")')
        continue
      if not (isinstance(dep, str) and dep.startswith(':')):
        problems.append(f'{where}: dep {dep!r} is not a local ":target"')
        continue
      other = targets.get(dep[1:])
      if other is None:
        problems.append(f'{where}: dep {dep} is not a defined target')
        continue
      graph[name].add(dep[1:])
      if other.kind != 'py_library':
        problems.append(f'{where}: dep {dep} is a {other.kind}, not a '
                        'py_library')
      if layer in _LAYERS and _layer(other) in _LAYERS and _LAYERS.index(
          _layer(other)) > _LAYERS.index(layer):
        problems.append(f'{where}: a {layer} target depends on {dep} '
                        f'({_layer(other)}); allowed: '
                        f'{" < ".join(_LAYERS[:_LAYERS.index(layer) + 1])}')
  for cycle in _cycles(graph):
    problems.append('dependency cycle: ' + ' -> '.join(cycle))
  return problems


# Tests --------------------------------------------------------------------------


def test_build_file_matches_sources():
  expected = render_build()
  build = ROOT / 'BUILD'
  if os.environ.get('UPDATE_BUILD'):
    assert not build_problems(expected), build_problems(expected)
    tmp = build.with_name('.BUILD.tmp')
    tmp.write_text(expected)
    os.replace(tmp, build)
  actual = build.read_text() if build.exists() else ''
  assert actual == expected, (
      'BUILD is out of date with the Python sources; regenerate it with '
      '`UPDATE_BUILD=1 python -m pytest tests/test_build_sync.py`.')


def test_build_file_is_a_graph_bazel_accepts():
  problems = build_problems((ROOT / 'BUILD').read_text())
  assert not problems, '\n'.join(problems)


def test_every_source_file_has_a_target():
  text = (ROOT / 'BUILD').read_text()
  missing = [
      p.relative_to(ROOT).as_posix()
      for _, p in _sources()
      if f'srcs = ["{p.relative_to(ROOT).as_posix()}"]' not in text
  ]
  assert not missing, f'No BUILD target for {missing}'
  assert text.count('py_test(') == len(list((ROOT / 'tests').glob('test_*.py')))


def test_modules_depend_on_modules_not_their_package():
  text = (ROOT / 'BUILD').read_text()
  targets = _parse_targets(text, [])
  coupling = targets['tfp_flowpp_bijectors_additive_coupling'].attrs['deps']
  assert ':tfp_flowpp_bijectors_coupling' in coupling
  assert ':tfp_flowpp_bijectors' not in coupling
  # `from tfp_flowpp.training import figures` is the module only.
  assert ':tfp_flowpp_training' not in targets['bin_sample'].attrs['deps']
  # `from tfp_flowpp import bijectors as fb` uses the package's names.
  assert ':tfp_flowpp_bijectors' in targets['tests_test_bijectors'].attrs[
      'deps']
  assert targets['bin_flowpp_flags'].attrs['imports'] == ['bin']


def test_unknown_third_party_import_is_a_one_line_error(tmp_path,
                                                        monkeypatch):
  fake = tmp_path / 'tfp_flowpp' / 'data' / 'config.py'
  fake.parent.mkdir(parents=True)
  fake.write_text('import numpy as np\nimport not_a_pypi_module\n')
  monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
  index = {'tfp_flowpp.data.config': 'tfp_flowpp_data_config'}
  with pytest.raises(ValueError) as e:
    _deps(fake, index)
  assert str(e.value) == (
      "tfp_flowpp/data/config.py imports 'not_a_pypi_module': not a module of "
      'this tree nor of the standard library; add its PyPI distribution to '
      '_THIRD_PARTY in tests/test_build_sync.py.')
  fake.write_text('import numpy as np\n')
  assert _deps(fake, index) == ([], ['numpy'])


def test_imports_resolve_to_modules(tmp_path, monkeypatch):
  fake = tmp_path / 'tfp_flowpp' / 'bijectors' / 'new_coupling.py'
  fake.parent.mkdir(parents=True)
  fake.write_text(
      'from tfp_flowpp.bijectors import coupling\n'
      'from tfp_flowpp.bijectors.shapes import event_dims\n'
      'from . import squeeze\n'
      'from .splits import SPLITS\n'
      'from tfp_flowpp import networks\n'
      'import tfp_flowpp.data.idx\n'
      'import tensorflow_probability as tfp\n')
  monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
  names = ('bijectors', 'bijectors.coupling', 'bijectors.shapes',
           'bijectors.splits', 'bijectors.squeeze', 'bijectors.new_coupling',
           'networks', 'data', 'data.idx')
  index = {'tfp_flowpp': 'tfp_flowpp'}
  index.update({f'tfp_flowpp.{n}': 'tfp_flowpp_' + n.replace('.', '_')
                for n in names})
  assert _deps(fake, index) == ([
      'tfp_flowpp_bijectors_coupling', 'tfp_flowpp_bijectors_shapes',
      'tfp_flowpp_bijectors_splits', 'tfp_flowpp_bijectors_squeeze',
      'tfp_flowpp_data_idx', 'tfp_flowpp_networks'
  ], ['tensorflow-probability'])


# Verbatim excerpt of BUILD as generated at commit 4ac9bec (34 package <->
# module cycles in the whole file, every target with the bin/bench/tests
# roots on its sys.path).
_OLD_BUILD_EXCERPT = _HEADER + '''

py_library(
    name = "tfp_flowpp_bijectors",
    srcs = ["tfp_flowpp/bijectors/__init__.py"],
    imports = [".", "bin", "bench", "tests"],
    deps = [
        ":tfp_flowpp_bijectors_actnorm",
    ],
)

py_library(
    name = "tfp_flowpp_bijectors_actnorm",
    srcs = ["tfp_flowpp/bijectors/actnorm.py"],
    imports = [".", "bin", "bench", "tests"],
    deps = [
        ":tfp_flowpp_bijectors",
        ":tfp_flowpp_bijectors_shapes",
        requirement("tensorflow"),
        requirement("tensorflow-probability"),
    ],
)

py_library(
    name = "tfp_flowpp_bijectors_shapes",
    srcs = ["tfp_flowpp/bijectors/shapes.py"],
    imports = [".", "bin", "bench", "tests"],
)
'''


def test_graph_check_rejects_the_old_build():
  problems = build_problems(_OLD_BUILD_EXCERPT)
  assert ('dependency cycle: tfp_flowpp_bijectors -> '
          'tfp_flowpp_bijectors_actnorm -> tfp_flowpp_bijectors') in problems
  bad_imports = [p for p in problems if 'may put only "." on sys.path' in p]
  assert len(bad_imports) == 3, problems


def _library(name, src, deps=(), imports='.', kind='py_library'):
  main = f'    main = "{src}",\n' if kind != 'py_library' else ''
  deps = ''.join(f'        {d},\n' for d in deps)
  return (f'{kind}(\n    name = "{name}",\n    srcs = ["{src}"],\n{main}'
          f'    imports = ["{imports}"],\n    deps = [\n{deps}    ],\n)\n')


_LIB = _library('tfp_flowpp_a', 'tfp_flowpp/a.py')


@pytest.mark.parametrize('text, expected', [
    (_LIB + _library('tfp_flowpp_b', 'tfp_flowpp/b.py', ['":tfp_flowpp_a"']),
     []),
    (_LIB + _library('tfp_flowpp_b', 'tfp_flowpp/b.py', ['":nope"']),
     ['tfp_flowpp_b (line 8): dep :nope is not a defined target']),
    (_LIB + _library('tests_util', 'tests/util.py', imports='tests') +
     _library('tfp_flowpp_b', 'tfp_flowpp/b.py', ['":tests_util"']),
     ['tfp_flowpp_b (line 15): a tfp_flowpp target depends on :tests_util '
      '(tests); allowed: tfp_flowpp']),
    (_library('bench_x', 'bench/x.py', imports='bench', kind='py_binary') +
     _library('bench_y', 'bench/y.py', ['":bench_x"'], imports='bench'),
     ['bench_y (line 9): dep :bench_x is a py_binary, not a py_library']),
    (_library('bin_t', 'bin/t.py', imports='.'),
     ['bin_t (line 1): imports = [\'.\']; a bin target may put only "bin" on '
      'sys.path']),
    (_LIB + _library('tfp_flowpp_b', 'tfp_flowpp/b.py', ['":tfp_flowpp_b"']),
     ['dependency cycle: tfp_flowpp_b -> tfp_flowpp_b']),
    (_library('tfp_flowpp_a', 'tfp_flowpp/a.py', ['":tfp_flowpp_c"']) +
     _library('tfp_flowpp_b', 'tfp_flowpp/b.py', ['":tfp_flowpp_a"']) +
     _library('tfp_flowpp_c', 'tfp_flowpp/c.py', ['":tfp_flowpp_b"']),
     ['dependency cycle: tfp_flowpp_a -> tfp_flowpp_c -> tfp_flowpp_b -> '
      'tfp_flowpp_a']),
    (_LIB + _LIB, ['line 8: duplicate target tfp_flowpp_a']),
    (_LIB + 'x = glob(["*.py"])\n', ['line 8: not a rule call']),
    (_LIB.replace('    ],', '        requirement("torch"),\n    ],'),
     ['tfp_flowpp_a (line 1): unknown requirement("torch")']),
], ids=['ok', 'undefined', 'layering', 'binary_dep', 'imports', 'self_cycle',
        'cycle', 'duplicate', 'statement', 'requirement'])
def test_graph_check_rules(text, expected):
  assert build_problems(text) == expected


def test_graph_check_rejects_invalid_starlark():
  text = _LIB.replace('["tfp_flowpp/a.py"]', '["tfp_flowpp/a.py"')
  problems = build_problems(text)
  assert len(problems) == 1 and 'syntax error' in problems[0], problems
