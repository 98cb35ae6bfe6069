"""Analytic judges and the all-prompts evaluation of the shapes world."""

from univid.eval.judge import Judgement, judge
from univid.eval.report import run_eval, write_grid

__all__ = ["Judgement", "judge", "run_eval", "write_grid"]
