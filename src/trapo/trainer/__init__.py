"""The trainer layer: guided rollouts, the TRAPO objective, the training loop, checkpoints."""

from trapo.trainer.data_prep import DataReport
from trapo.trainer.metrics import read_metrics
from trapo.trainer.run import TrainResult
from trapo.trainer.trainer import TRAPOTrainer

__all__ = ["DataReport", "TRAPOTrainer", "TrainResult", "read_metrics"]
