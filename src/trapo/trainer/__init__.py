"""The trainer layer: guided rollouts, the TRAPO objective, the training loop, checkpoints."""

from trapo.trainer.loop import DataReport, TrainResult, TRAPOTrainer, read_metrics

__all__ = ["DataReport", "TRAPOTrainer", "TrainResult", "read_metrics"]
