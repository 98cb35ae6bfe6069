"""Training: the loop (loop.py), its batches, guards, metrics and optimizer, and how a run
starts or resumes (run.py)."""

from univid.train.loop import Trainer
from univid.train.run import finetune, start_or_resume, train

__all__ = ["Trainer", "finetune", "start_or_resume", "train"]
