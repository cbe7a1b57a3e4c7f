"""Distributed data-parallel training: a local ``torchrun`` launcher for the train stage, and the Kubeflow Trainer
``TrainJob`` (trainer.kubeflow.org/v1alpha1) that runs the same command on a cluster."""

from textclf.trainjob.config import DistributedConfig, TrainJobConfig
from textclf.trainjob.launch import TrainingFailedError, train_distributed, worker_command

__all__ = ["DistributedConfig", "TrainJobConfig", "TrainingFailedError", "train_distributed", "worker_command"]
