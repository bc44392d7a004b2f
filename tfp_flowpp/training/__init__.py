"""Training: config, optimizer/schedule, distributed loop, checkpoints, figures."""

from tfp_flowpp.training.checkpoints import CheckpointError
from tfp_flowpp.training.checkpoints import ema_weights
from tfp_flowpp.training.checkpoints import restore_for_inference
from tfp_flowpp.training.config import TrainConfig
from tfp_flowpp.training.evaluation import BpdEvaluator
from tfp_flowpp.training.optimization import make_optimizer
from tfp_flowpp.training.trainer import Trainer
from tfp_flowpp.training.trainer import TrainingError
from tfp_flowpp.training.trainer import train
from tfp_flowpp.training.workdir import Workdir
from tfp_flowpp.training.workdir import WorkdirError

__all__ = [
    'BpdEvaluator', 'CheckpointError', 'TrainConfig', 'Trainer',
    'TrainingError', 'Workdir', 'WorkdirError', 'ema_weights', 'make_optimizer',
    'restore_for_inference', 'train'
]
