"""bench/reference_run.py reports a workdir's records and writes its section.

It trains nothing, so it runs on the shipped v0.1 tiny workdir (4×4 digits,
20 steps) against a scratch doc; the numbers in the table are the ones in
its metrics.jsonl, and the histogram baseline is the library's.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKDIR = os.path.join(ROOT, 'tests', 'data', 'v0_1_tiny_workdir')


def test_reference_run_section_has_the_run_records(tmp_path):
  doc = tmp_path / 'benchmarks.md'
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bench', 'reference_run.py'),
       f'--workdir={WORKDIR}', f'--output_doc={doc}'],
      capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  text = doc.read_text()
  assert '<!-- BEGIN reference_run -->' in text, text
  records = [json.loads(l) for l in open(os.path.join(WORKDIR,
                                                      'metrics.jsonl'))]
  last = records[-1]
  assert f"| {last['step']:,} |" in text
  assert f"{last['val_bpd']:.4f}" in text
  assert (f"| bin/train final, k = {last['test_num_samples']} | all test | "
          f"{last['test_bpd']:.4f} |") in text
  assert '| per-pixel histogram baseline | all test |' in text


def test_reference_run_needs_a_workdir(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bench', 'reference_run.py'),
       f'--workdir={tmp_path}', '--quick'],
      capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
  assert result.returncode != 0
  assert 'not a tfp_flowpp workdir' in result.stderr, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
