"""Smoke tests of bench/sampling.py and bench/determinism.py (--quick).

They measure nothing here; they check the scripts run end to end on tiny
models, write their doc section to a scratch file (never the repo's docs/)
and report what must hold whatever the machine: our flow decodes every
sample finitely, and --deterministic makes a replay bit-identical.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, tmp_path, timeout=2400):
  doc = tmp_path / 'benchmarks.md'
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bench', script), '--quick',
       f'--output_doc={doc}'],
      capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result.stdout, doc.read_text()


@pytest.mark.slow
def test_sampling_quick(tmp_path):
  stdout, doc = _run('sampling.py', tmp_path)
  assert '<!-- BEGIN sampling -->' in doc and '## Sampling robustness' in doc
  ours = re.findall(r'\| ours \(Flow\+\+\) \(step 10\) \| ([0-9.]+) \| 64 \| '
                    r'([0-9.]+)% \|', doc)
  assert [t for t, _ in ours] == ['0.7', '0.9', '1.0', '1.2'], doc
  assert all(float(f) == 0. for _, f in ours), ours
  assert doc.count('| tfb.Glow (step 10) |') == 4, doc
  assert 'round trip' in stdout


@pytest.mark.slow
def test_determinism_quick(tmp_path):
  stdout, doc = _run('determinism.py', tmp_path)
  assert '<!-- BEGIN determinism -->' in doc
  row = re.search(r'\| tiny \(batch 32\) \| --deterministic \| 0 of ([0-9,]+) '
                  r'\| 0 \|', doc)
  assert row, doc
  assert 'ms/step' in stdout
