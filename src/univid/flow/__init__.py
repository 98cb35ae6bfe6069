"""Rectified flow: straight paths, velocity regression, ODE sampling. Imports only torch."""

from univid.flow.path import flow_loss, flow_loss_per_sample, sample_path
from univid.flow.sampler import SOLVERS, conditional, euler_sample, guided, nfe, ode_sample
from univid.flow.timesteps import logit_normal, sampling_times, shift_time, uniform

__all__ = [
    "SOLVERS",
    "conditional",
    "euler_sample",
    "flow_loss",
    "flow_loss_per_sample",
    "guided",
    "logit_normal",
    "nfe",
    "ode_sample",
    "sample_path",
    "sampling_times",
    "shift_time",
    "uniform",
]
