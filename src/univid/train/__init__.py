"""Training: the loop (loop.py), its batches, guards, metrics and optimizer, and how a run
starts or resumes (run.py), and the teacher paths a few-step student learns from (paths.py)."""

from univid.train.loop import Trainer
from univid.train.run import distill, finetune, start_or_resume, train

__all__ = ["Trainer", "distill", "finetune", "start_or_resume", "train"]
