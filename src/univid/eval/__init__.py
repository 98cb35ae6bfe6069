"""Analytic judges and the all-prompts evaluation of the shapes world.

``univid.eval.run.evaluate`` (a pipeline in, a report out) is not imported here: it needs torch.
"""

from univid.eval.judge import FAILURES, Judgement, failure_against, judge
from univid.eval.report import run_eval, save_report, wilson_interval, write_grid

__all__ = [
    "FAILURES",
    "Judgement",
    "failure_against",
    "judge",
    "run_eval",
    "save_report",
    "wilson_interval",
    "write_grid",
]
