"""Rectified flow: straight paths, velocity regression, ODE sampling. Imports only torch."""

from univid.flow.path import (
    average_velocity_loss,
    expand_time,
    flow_loss,
    flow_loss_per_sample,
    sample_path,
)
from univid.flow.sampler import (
    SOLVERS,
    Given,
    conditional,
    euler_path,
    euler_sample,
    guidance_inputs,
    guided,
    nfe,
    ode_sample,
)
from univid.flow.timesteps import logit_normal, sampling_times, shift_time, uniform

__all__ = [
    "SOLVERS",
    "Given",
    "average_velocity_loss",
    "conditional",
    "euler_path",
    "euler_sample",
    "expand_time",
    "flow_loss",
    "flow_loss_per_sample",
    "guidance_inputs",
    "guided",
    "logit_normal",
    "nfe",
    "ode_sample",
    "sample_path",
    "sampling_times",
    "shift_time",
    "uniform",
]
