"""The experiments of bench/ood.py and their flags (also bench/ood_models.py's).

Each is ``(key, title, flag of the model workdir, flag of its background
workdir, held out)``: a model, its in-distribution test images and its OOD
sets; a held-out experiment scores the classes its model never saw.
"""

EXPERIMENTS = (
    ('fashion_mnist', 'Fashion-MNIST model', 'workdir', 'background_workdir',
     False),
    ('fashion_mnist_heldout', 'Fashion-MNIST model trained without a class',
     'heldout_workdir', 'heldout_background_workdir', True),
    ('digits', 'digits quickstart model', 'digits_workdir',
     'digits_background_workdir', False),
    ('digits_heldout', 'digits quickstart model trained without a class',
     'digits_heldout_workdir', 'digits_heldout_background_workdir', True),
)


def complexity_flag(flag):
  """The flag of an experiment's generic model: digits_workdir ->
  digits_complexity_workdir."""
  return flag.replace('workdir', 'complexity_workdir')
