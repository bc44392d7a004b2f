"""BUILD is generated from the Python imports and must match the tree.

Bazel cannot run `py_test` offline here, so pytest is the runner; this test
keeps BUILD from drifting: every module under tfp_flowpp/, every script in
bin/ and bench/, and every test file gets a target whose deps are exactly its
imports. After adding or changing imports run

    UPDATE_BUILD=1 python -m pytest tests/test_build_sync.py
"""

import ast
import os
import pathlib

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

_HEADER = '''\
# Bazel targets for tfp_flowpp. GENERATED from the Python imports by
# tests/test_build_sync.py — do not edit by hand; after adding a module run
#   UPDATE_BUILD=1 python -m pytest tests/test_build_sync.py
# pytest is the test runner (Bazel cannot fetch rules_python/pip offline).

load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")
load("@pypi//:requirements.bzl", "requirement")

package(default_visibility = ["//visibility:public"])
'''


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


def _module_index(sources):
  """Dotted module name (as importable) -> target name."""
  index = {}
  for _, path in sources:
    rel = path.relative_to(ROOT).with_suffix('')
    parts = list(rel.parts)
    if parts[0] in ('tests', 'bin', 'bench'):
      parts = parts[1:]  # These folders are on sys.path, not packages.
    if parts[-1] == '__init__':
      parts = parts[:-1]
    index['.'.join(parts)] = _target_name(path)
  return index


def _imports(path):
  tree = ast.parse(path.read_text(), filename=str(path))
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      names.update(f'{node.module}.{alias.name}' for alias in node.names)
  return names


def _deps(path, index):
  internal, external = set(), set()
  own = _target_name(path)
  for name in _imports(path):
    top = name.split('.')[0]
    if top in _THIRD_PARTY:
      external.add(_THIRD_PARTY[top])
      continue
    parts = name.split('.')
    for n in range(len(parts), 0, -1):
      target = index.get('.'.join(parts[:n]))
      if target:
        if target != own:
          internal.add(target)
        break
  return sorted(internal), sorted(external)


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
    lines.append('    imports = [".", "bin", "bench", "tests"],')
    deps = [f'":{t}"' for t in internal
           ] + [f'requirement("{r}")' for r in external]
    if deps:
      lines.append('    deps = [')
      lines += [f'        {d},' for d in deps]
      lines.append('    ],')
    lines.append(')')
    blocks.append('\n'.join(lines))
  return '\n\n'.join(blocks) + '\n'


def test_build_file_matches_sources():
  expected = render_build()
  build = ROOT / 'BUILD'
  if os.environ.get('UPDATE_BUILD'):
    build.write_text(expected)
  actual = build.read_text() if build.exists() else ''
  assert actual == expected, (
      'BUILD is out of date with the Python sources; regenerate it with '
      '`UPDATE_BUILD=1 python -m pytest tests/test_build_sync.py`.')


def test_every_source_file_has_a_target():
  text = (ROOT / 'BUILD').read_text()
  missing = [
      p.relative_to(ROOT).as_posix()
      for _, p in _sources()
      if f'srcs = ["{p.relative_to(ROOT).as_posix()}"]' not in text
  ]
  assert not missing, f'No BUILD target for {missing}'
  assert text.count('py_test(') == len(list((ROOT / 'tests').glob('test_*.py')))
