"""Rectified flow: straight paths, velocity regression, ODE sampling. Imports only torch."""

from univid.flow.path import flow_loss, flow_loss_per_sample, sample_path
from univid.flow.sampler import conditional, euler_sample, guided
from univid.flow.timesteps import logit_normal, sampling_times, shift_time, uniform

__all__ = [
    "conditional",
    "euler_sample",
    "flow_loss",
    "flow_loss_per_sample",
    "guided",
    "logit_normal",
    "sample_path",
    "sampling_times",
    "shift_time",
    "uniform",
]
