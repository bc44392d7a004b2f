#!/usr/bin/env python3
"""Trains every model bench/ood.py scores for one dataset, then scores them.

    python bench/ood_models.py --dataset=fashion_mnist --root=DIR \\
        [--model_workdir=REFERENCE_RUN] [--model_steps=3000] [--aux_steps=1000]
        [--background_steps=N] [--skip_generic] [--skip_heldout]
    python bench/ood_models.py --dataset=digits --root=DIR
    python bench/ood_models.py --dataset=fashion_mnist --root=DIR --dry_run

One command for the whole out-of-distribution experiment of a dataset, so
that it can be reproduced and, being hours long on two cores, resumed: each
step is a bin/train (or ``bench/ood.py --write_*``) subprocess, every
bin/train resumes from its last checkpoint and returns at once when its run
is complete, and a written .npz is kept. Rerun the same command after a kill
or on the next day; it picks up where it stopped. Under ``DIR``:

* ``model``: the model scored, the dataset's flag file (Fashion-MNIST:
  ``configs/fashion_mnist_flowpp.flags`` with the reference run's cosine
  schedule; digits: ``configs/quickstart.flags``), unless
  ``--model_workdir`` names one trained elsewhere (e.g. the reference run of
  bench/reference_run.py);
* ``background``: the same flags and as many steps as the model (the steps
  ``--model_workdir`` trained, by its metrics.jsonl), on pixel-perturbed
  training images (each pixel a uniform random level with probability 0.2;
  Ren et al. 2019, who train the background like the model):
  ``bin/train --perturbation_rate=0.2`` for Fashion-MNIST, five fixed draws
  (``bench/ood.py --write_perturbed --copies=5``) for the digits;
* ``generic`` on ``patches.npz`` (``bench/ood.py --write_patches``: grey
  photo patches of the model's size and levels, none of them an OOD set):
  the generic model of the S (flowpp) score (``--skip_generic``: neither,
  and no S (flowpp) column);
* ``heldout``: the model's flags on classes 0-8 only (class 9 is the
  held-out OOD set), and ``heldout_background`` its background model (as
  many steps as ``heldout``).

A background trained for fewer steps than its model makes the likelihood
ratio misleading: stop 31 scored the 6,000-step reference model against a
1,000-step background, and images far from the data (inverted, constant)
came out *more* in-distribution than the test set (LLR AUROC 0.056 and
0.000), because the weak background found them even less likely than the
model did. ``--background_steps`` overrides the matching.

Then ``bench/ood.py`` scores the model with its background and generic
model, and the held-out model with its own (``--no_score`` stops after
training; ``--dry_run`` prints the commands and runs nothing). Fashion-MNIST
models evaluate their test bound with k = 1 at the end of training (the
flag file's k = 64 over 10,000 images would take hours; bin/evaluate does
that for the reference run).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
from _ood_experiments import EXPERIMENTS, complexity_flag  # pylint: disable=g-import-not-at-top,wrong-import-position

PYTHON = sys.executable
OOD = os.path.join(_common.ROOT, 'bench', 'ood.py')
TRAIN = os.path.join(_common.ROOT, 'bin', 'train')
HELDOUT_CLASSES = '0,1,2,3,4,5,6,7,8'
PERTURBATION_RATE = 0.2

# Per dataset (a key of EXPERIMENTS, which also has its
# held-out experiment as KEY_heldout): flag file, patch size and levels,
# default steps (model, auxiliary models), the model's schedule, and whether
# the background trains on fresh perturbations (True) or on fixed draws.
DATASETS = {
    'fashion_mnist': dict(
        flagfile='configs/fashion_mnist_flowpp.flags', image_size=28,
        num_levels=256, model_steps=3000, aux_steps=1000,
        schedule=('--lr_decay=cosine', '--eval_every=500',
                  '--checkpoint_every=250', '--log_every=25',
                  '--max_eval_images=1000', '--test_num_samples=1'),
        fresh_perturbations=True, scoring=('--max_images=1000',
                                           '--reference_images=1000')),
    'digits': dict(
        flagfile='configs/quickstart.flags', image_size=8, num_levels=17,
        model_steps=600, aux_steps=600, schedule=(),
        fresh_perturbations=False, scoring=()),
}


def trained_steps(workdir):
  """Steps a bin/train workdir has trained: the last step in its
  metrics.jsonl, else its configured ``train_steps``.

  Reads the file as `training.Workdir.read_metrics` does (a torn last line
  of a killed run ends the records) without importing TensorFlow, which
  would add seconds to every plan of this script.
  """
  steps = None
  metrics = os.path.join(workdir, 'metrics.jsonl')
  if os.path.isfile(metrics):
    with open(metrics, encoding='utf-8') as f:
      for line in f:
        try:
          steps = json.loads(line).get('step', steps)
        except json.JSONDecodeError:
          break
  if steps is None:
    with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
      steps = json.load(f)['train']['train_steps']
  return int(steps)


def plan(args):
  """The steps of the experiment: ``[(description, argv or None), ...]``.

  A step whose argv is None is already done (a written .npz).
  """
  spec = DATASETS[args.dataset]
  root = os.path.abspath(args.root)
  flagfile = os.path.join(_common.ROOT, spec['flagfile'])
  model_steps = args.model_steps or spec['model_steps']
  if args.model_workdir:
    model_steps = trained_steps(args.model_workdir)
  aux_steps = args.aux_steps or spec['aux_steps']
  run = {name: os.path.join(root, name) for name in (
      'model', 'background', 'generic', 'heldout', 'heldout_background')}
  if args.model_workdir:
    run['model'] = os.path.abspath(args.model_workdir)
  steps = []

  def train(name, train_steps, *flags):
    argv = [PYTHON, TRAIN, f'--flagfile={flagfile}',
            f'--workdir={run[name]}', f'--train_steps={train_steps}',
            *spec['schedule'], *flags, *args.train_flag]
    steps.append((f'train {name}', argv))

  def write(name, path, *flags):
    argv = [PYTHON, OOD, *flags, f'--out={path}']
    steps.append((f'write {name}', None if os.path.exists(path) else argv))

  def background(name, of, of_steps, *flags):
    # As many steps as the model it belongs to (see the module docstring).
    steps_ = args.background_steps or of_steps
    if spec['fresh_perturbations']:
      train(name, steps_, f'--perturbation_rate={PERTURBATION_RATE}',
            *flags)
      return
    path = os.path.join(root, f'{name}.npz')
    write(name, path, f'--write_perturbed={run[of]}',
          f'--mutation_rate={PERTURBATION_RATE}', '--copies=5')
    train(name, steps_, f'--dataset=npz:{path}')

  if not args.model_workdir:
    train('model', model_steps)
  background('background', 'model', model_steps)
  patches = os.path.join(root, 'patches.npz')
  if not args.skip_generic:
    write('patches', patches, '--write_patches',
          f'--image_size={spec["image_size"]}',
          f'--num_levels={spec["num_levels"]}')
    train('generic', aux_steps, f'--dataset=npz:{patches}')
  if not args.skip_heldout:
    train('heldout', aux_steps, f'--classes={HELDOUT_CLASSES}')
    background('heldout_background', 'heldout', aux_steps,
               f'--classes={HELDOUT_CLASSES}')
  if not args.no_score:
    # bench/ood.py's own flag names, from its experiment table.
    scored = {args.dataset: ('model', 'background')}
    if not args.skip_heldout:
      scored[f'{args.dataset}_heldout'] = ('heldout', 'heldout_background')
    argv = [PYTHON, OOD]
    for key, _, flag, background_flag, _ in EXPERIMENTS:
      if key in scored:
        model, background_model = scored[key]
        argv += [f'--{flag}={run[model]}',
                 f'--{background_flag}={run[background_model]}']
        if not args.skip_generic:
          argv.append(f'--{complexity_flag(flag)}={run["generic"]}')
    steps.append(('score with bench/ood.py',
                  argv + [*spec['scoring'], *args.ood_flag]))
  return steps


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--dataset', choices=sorted(DATASETS), required=True)
  parser.add_argument('--root', required=True,
                      help='Folder of the trained models (created).')
  parser.add_argument('--model_workdir', default=None,
                      help='Score this trained run instead of training '
                      'DIR/model (its background is still trained).')
  parser.add_argument('--model_steps', type=int, default=0,
                      help='Steps of DIR/model (default 3000 for '
                      'Fashion-MNIST, 600 for the digits).')
  parser.add_argument('--aux_steps', type=int, default=0,
                      help='Steps of the generic and held-out models '
                      '(default 1000 for Fashion-MNIST, 600 for the '
                      'digits).')
  parser.add_argument('--background_steps', type=int, default=0,
                      help='Steps of both background models (default: as '
                      'many as the model each belongs to, which is what '
                      'makes the likelihood ratio fair).')
  parser.add_argument('--train_flag', action='append', default=[],
                      help='Extra bin/train flag for every model (repeat), '
                      'e.g. --train_flag=--precision=float32.')
  parser.add_argument('--ood_flag', action='append', default=[],
                      help='Extra bench/ood.py flag (repeat), e.g. '
                      '--ood_flag=--output_doc=/tmp/ood.md.')
  parser.add_argument('--skip_generic', action='store_true',
                      help='Neither write the patches nor train the generic '
                      'model, and score without the S (flowpp) column: '
                      'saves one auxiliary training and the per-image code '
                      'lengths (one image at a time in float64; 0.17 s per '
                      '28x28 image with the Fashion-MNIST architecture on 2 '
                      'Zen 5 cores, about 25 min for its 9,000 scored '
                      'images). Rerun without it later to add the column: '
                      'the trained models are kept.')
  parser.add_argument('--skip_heldout', action='store_true',
                      help='Neither train nor score the held-out-class '
                      'model and its background (two of the trainings).')
  parser.add_argument('--no_score', action='store_true',
                      help='Train only; do not run bench/ood.py.')
  parser.add_argument('--dry_run', action='store_true',
                      help='Print the commands; run nothing.')
  args = parser.parse_args(argv[1:])
  for flag in ('model_steps', 'aux_steps', 'background_steps'):
    if getattr(args, flag) < 0:
      parser.error(f'--{flag} must be >= 0 (0: the default).')
  if args.model_workdir and not os.path.isfile(
      os.path.join(args.model_workdir, 'config.json')):
    parser.error(f'--model_workdir={args.model_workdir} is not a bin/train '
                 'workdir (no config.json).')
  steps = plan(args)
  if not args.dry_run:
    os.makedirs(args.root, exist_ok=True)
  for i, (what, command) in enumerate(steps, 1):
    header = f'[{i}/{len(steps)}] {what}'
    if command is None:
      print(f'{header}: done (kept)', flush=True)
      continue
    print(f'{header}: {shlex.join(command)}', flush=True)
    if args.dry_run:
      continue
    status = subprocess.call(command, cwd=_common.ROOT)
    if status:
      print(f'ood_models.py: {what} failed (exit status {status}); fix it '
            'and rerun the same command to resume.', file=sys.stderr)
      return status
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
