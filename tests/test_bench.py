"""Smoke tests of the benchmark scripts (they measure nothing here).

`bench/speed.py --quick` and `bench/quality.py --quick` run every code path
on tiny models; we check they finish, print their tables, write their doc
section to a scratch file (never the repo's docs/) and report the facts that
must hold whatever the speed: each coupling network runs once per coupling,
and the mixture-CDF inverse converges with a small error.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tfp_flowpp.data import idx as idx_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, tmp_path, *args, timeout=600):
  doc = tmp_path / 'benchmarks.md'
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bench', script), '--quick',
       f'--output_doc={doc}', *args],
      capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result.stdout, doc.read_text()


@pytest.mark.slow
def test_speed_quick(tmp_path):
  stdout, doc = _run('speed.py', tmp_path)
  assert '<!-- BEGIN speed -->' in doc and '<!-- END speed -->' in doc
  assert '<!-- BEGIN quality -->' in doc  # The other section is kept.
  for heading in ('### Throughput', '### Coupling-network evaluations',
                  '### Achieved FLOP/s', '### Mixture-of-logistics CDF inverse',
                  '### Targets', '* Machine:', '* Command: `python bench/'
                  'speed.py --quick`', '### Mixed precision: float32 against',
                  '### Fused attention kernel:',
                  'bfloat16 flags in /proc/cpuinfo:'):
    assert heading in doc, heading
  # The precision axis: float32 and bf16 rates of the same model, and ratios.
  assert re.search(r'\| tiny \(4×4 digits\) \| 32 \| [\d,.]+ \| [\d,.]+ \| '
                   r'[\d.]+× \| [\d,.]+ \| [\d,.]+ \| [\d.]+× \|', doc), doc
  # Ours: every coupling network runs once (2 flow + 1 dequantizer coupling).
  assert re.search(r'tiny \(4×4 digits\) — ours \| 2 \+ 1 \| 3 \| 2 \| 2 \| yes',
                   doc), doc
  # tfb.Glow's RealNVP runs its network twice per coupling in log_prob.
  assert 'no: 2 per coupling in log p' in doc
  # Chandrupatla converges to float64 precision on the realistic problem.
  row = re.search(r'\| float64 \| Chandrupatla \(ours\) \| (\d+) \|.*?\| '
                  r'([0-9.e+-]+) \| ([0-9.e+-]+) \| ([0-9.e+-]+) \| 0 \|', doc)
  assert row, doc
  assert int(row.group(1)) < 100 and float(row.group(3)) < 1e-10
  assert 'train step img/s' in stdout
  # The attention kernel axis: both precisions, and the core in 3 dtypes.
  for precision in ('float32', 'mixed_bfloat16'):
    assert re.search(r'\| tiny \(4×4 digits\) \| ' + precision +
                     r' \| [\d,.]+ \| [\d,.]+ \| [\d.]+× \|', doc), precision
  for dtype in ('float32', 'bfloat16', 'float16'):
    assert re.search(r'\| tiny \| 4 × 2 \| 40 \| 12 \| ' + dtype +
                     r' \| [\d.]+ \| [\d.]+ \| [\d.]+× \|', doc), dtype
  # The elementwise kernels: bfloat16 model with TF ops against fused.
  assert '### Fused elementwise kernels of the gated blocks' in doc
  assert re.search(r'\| tiny \(4×4 digits\) \| [\d,.]+ \| [\d,.]+ \| '
                   r'[\d.]+× \| [\d,.]+ \| [\d,.]+ \| [\d.]+× \|\n\nThe same '
                   r'bfloat16 model', doc), doc


needs_fashion_mnist = pytest.mark.skipif(
    not os.path.isdir(idx_lib.DEBIAN_FASHION_MNIST_DIR),
    reason='needs Debian\'s dataset-fashion-mnist (apt-get install '
    'dataset-fashion-mnist)')


@pytest.mark.slow
@needs_fashion_mnist
def test_quality_quick(tmp_path):
  figures = tmp_path / 'figures'
  _, doc = _run('quality.py', tmp_path, '--models=flowpp,tfb_glow',
                f'--figures_dir={figures}', '--precision=mixed_bfloat16')
  assert '<!-- BEGIN quality -->' in doc
  assert '| Flow++ |' in doc and '| tfb.Glow |' in doc
  # Flow++ in bf16, tfb.Glow in float32, and the table says so.
  assert re.search(r'\| Flow\+\+ \| `fashion_mnist_flowpp` \| mixed_bfloat16 \|',
                   doc), doc
  assert re.search(r'\| tfb\.Glow \| tfb\.Glow [^|]*\| float32 \|', doc), doc
  assert '| per-pixel histogram |' in doc
  for name in ('quality_bpd_vs_cpu.png', 'quality_samples_all.png',
               'quality_samples_flowpp.png', 'quality_samples_tfb_glow.png',
               'quality_results.json'):
    assert (figures / name).stat().st_size > 0, name
  # Fashion-MNIST's per-pixel histogram on all 10,000 test images.
  assert re.search(r'\| per-pixel histogram \|.*\| 4\.58\d\d \|', doc), doc


@pytest.mark.slow
@needs_fashion_mnist
def test_quality_quick_equal_steps_precision_parity(tmp_path):
  _, doc = _run('quality.py', tmp_path, '--equal_steps=2,4',
                f'--figures_dir={tmp_path}')
  assert '<!-- BEGIN quality_precision -->' in doc
  assert 'val bpd mixed_bfloat16' in doc
  for step in (2, 4):
    assert re.search(rf'\| {step} \| \d\.\d{{4}} \| \d\.\d{{4}} \| [+-]\d\.\d{{4}} \|',
                     doc), doc
  assert (tmp_path / 'quality_precision_results.json').stat().st_size > 0


@needs_fashion_mnist
@pytest.mark.slow
def test_quality_quick_all_models(tmp_path):
  _, doc = _run('quality.py', tmp_path, f'--figures_dir={tmp_path}')
  for label in ('Flow++, no attention', 'Flow++, affine coupling',
                'Flow++, uniform dequantization', 'Glow (ours)'):
    assert f'| {label} |' in doc, label
  assert 'Flow++ beats Flow++, no attention' in doc


@pytest.mark.slow  # Four training processes (~2 min on a quiet 2-core CPU).
def test_conditional_quick(tmp_path):
  figures = tmp_path / 'figures'
  stdout, doc = _run('conditional.py', tmp_path, '--variants=none,both',
                     '--regimes=steps,cpu', f'--figures_dir={figures}',
                     timeout=1800)
  assert '<!-- BEGIN conditional_digits -->' in doc
  assert '| unconditional | equal steps |' in doc
  assert '| embedding + class prior (default) | equal CPU |' in doc
  assert re.search(r'\| embedding \+ class prior \(default\) \| equal steps '
                   r'\|.*\| [+-]\d\.\d{4} \| 0\.\d{3} \|', doc), doc
  assert (figures / 'conditional_samples_digits_both.png').stat().st_size
  assert 'Bayes-classifier test accuracy' in stdout


def _ood_models(*args):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bench', 'ood_models.py'),
       '--dry_run', *args],
      capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


def test_ood_models_plans_every_model_bench_ood_scores(tmp_path):
  """The pipeline's commands: the right models, flags bin/train knows, and a
  bench/ood.py call naming all of them; a written .npz is kept."""
  golden = os.path.join(ROOT, 'tests', 'data', 'v0_1_tiny_workdir')
  result = _ood_models('--dataset=fashion_mnist', f'--root={tmp_path}',
                       f'--model_workdir={golden}')
  assert result.returncode == 0, result.stderr[-2000:]
  steps = [l for l in result.stdout.splitlines() if l.startswith('[')]
  assert [s.split(':')[0].split('] ')[1] for s in steps] == [
      'train background', 'write patches', 'train generic', 'train heldout',
      'train heldout_background', 'score with bench/ood.py']
  train = {s.split(':')[0].split('] ')[1]: s for s in steps}
  for name in ('background', 'generic', 'heldout', 'heldout_background'):
    line = train[f'train {name}']
    assert f'--workdir={tmp_path}/{name} ' in line, line
    assert '--test_num_samples=1' in line and '--lr_decay=cosine' in line
  assert '--perturbation_rate=0.2' in train['train background']
  # Each background trains as many steps as its model: the golden run's 20
  # (its metrics.jsonl), the held-out model's default 1,000.
  assert ' --train_steps=20 ' in train['train background']
  for name in ('generic', 'heldout', 'heldout_background'):
    assert ' --train_steps=1000 ' in train[f'train {name}'], name
  assert '--perturbation_rate=0.2 --classes=0,1,2,3,4,5,6,7,8' in train[
      'train heldout_background']
  assert f'--dataset=npz:{tmp_path}/patches.npz' in train['train generic']
  score = train['score with bench/ood.py']
  for flag, run in (('workdir', golden), ('background_workdir', 'background'),
                    ('complexity_workdir', 'generic'),
                    ('heldout_workdir', 'heldout'),
                    ('heldout_background_workdir', 'heldout_background'),
                    ('heldout_complexity_workdir', 'generic')):
    assert f' --{flag}={os.path.join(tmp_path, run)}' in score, (flag, score)
  # Every flag the bin/train commands pass exists (a rename fails here).
  help_text = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bin', 'train'), '--helpfull'],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
      check=False).stdout  # absl exits with 1 after --helpfull.
  assert '--perturbation_rate:' in help_text, help_text[-2000:]
  for line in train.values():
    if 'bin/train' in line:
      for flag in re.findall(r' --(\w+)=', line):
        assert f'--{flag}:' in help_text or f'--[no]{flag}:' in help_text, flag

  (tmp_path / 'patches.npz').write_bytes(b'')  # Already written: kept.
  result = _ood_models('--dataset=digits', f'--root={tmp_path}')
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  assert lines[0].startswith('[1/9] train model: ') and (
      'configs/quickstart.flags' in lines[0]), lines[0]
  assert lines[1].startswith('[2/9] write background: ') and (
      f'--write_perturbed={tmp_path}/model --mutation_rate=0.2 --copies=5'
      in lines[1]), lines[1]
  assert f'--dataset=npz:{tmp_path}/background.npz' in lines[2]
  assert lines[3] == '[4/9] write patches: done (kept)'
  for line in (lines[0], lines[2]):  # The model and its background.
    assert ' --train_steps=600 ' in line + ' ', line
  assert ' --digits_heldout_background_workdir=' in lines[-1]

  # --skip_generic: no patches, no generic model, no S (flowpp) flags.
  result = _ood_models('--dataset=fashion_mnist', f'--root={tmp_path}',
                       f'--model_workdir={golden}', '--skip_generic')
  assert result.returncode == 0, result.stderr[-2000:]
  steps = [l.split(':')[0].split('] ')[1] for l in result.stdout.splitlines()]
  assert steps == ['train background', 'train heldout',
                   'train heldout_background', 'score with bench/ood.py']
  score = result.stdout.splitlines()[-1]
  assert 'complexity_workdir' not in score and (
      f' --heldout_background_workdir={tmp_path}/heldout_background' in score)

  # --background_steps overrides the matching for both backgrounds.
  result = _ood_models('--dataset=fashion_mnist', f'--root={tmp_path}',
                       f'--model_workdir={golden}', '--background_steps=7')
  assert result.returncode == 0, result.stderr[-2000:]
  lines = {l.split(':')[0].split('] ')[1]: l
           for l in result.stdout.splitlines()}
  assert ' --train_steps=7 ' in lines['train background']
  assert ' --train_steps=7 ' in lines['train heldout_background']
  assert ' --train_steps=1000 ' in lines['train heldout']

  # A killed run's torn last metrics line ends its records (as
  # training.Workdir.read_metrics reads them): still the golden's 20 steps.
  torn = tmp_path / 'torn_run'
  shutil.copytree(golden, torn)
  with open(torn / 'metrics.jsonl', 'a', encoding='utf-8') as f:
    f.write('{"step": 30, "train_b')
  result = _ood_models('--dataset=fashion_mnist', f'--root={tmp_path}',
                       f'--model_workdir={torn}', '--skip_heldout',
                       '--skip_generic')
  assert result.returncode == 0, result.stderr[-2000:]
  assert ' --train_steps=20 ' in result.stdout.splitlines()[0]

  # --skip_heldout: the model's own experiment only.
  result = _ood_models('--dataset=fashion_mnist', f'--root={tmp_path}',
                       f'--model_workdir={golden}', '--skip_heldout',
                       '--skip_generic')
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  assert [l.split(':')[0].split('] ')[1] for l in lines] == [
      'train background', 'score with bench/ood.py']
  assert 'heldout' not in lines[-1] and (
      f' --background_workdir={tmp_path}/background' in lines[-1])


def test_ood_models_rejects_a_missing_model_workdir(tmp_path):
  result = _ood_models('--dataset=fashion_mnist', f'--root={tmp_path}',
                       f'--model_workdir={tmp_path}/none')
  assert result.returncode == 2
  assert 'is not a bin/train workdir' in result.stderr.splitlines()[-1]
  assert not os.listdir(tmp_path)
