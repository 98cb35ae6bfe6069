import math

import pytest
import torch

from univid.flow import (
    euler_sample,
    flow_loss,
    guided,
    logit_normal,
    sample_path,
    sampling_times,
    shift_time,
)


def test_path_endpoints_and_velocity():
    x_data, noise = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    x_t, v = sample_path(x_data, noise, torch.tensor([0.0, 1.0, 0.25]))
    assert torch.equal(x_t[0], x_data[0])
    assert torch.equal(x_t[1], noise[1])
    assert torch.allclose(x_t[2], 0.75 * x_data[2] + 0.25 * noise[2])
    assert torch.equal(v, noise - x_data)


def test_flow_loss_is_zero_for_the_true_velocity():
    x_data, noise, t = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4)
    assert flow_loss(lambda x, tt: noise - x_data, x_data, noise, t).item() == 0.0
    assert flow_loss(lambda x, tt: torch.zeros_like(x), x_data, noise, t).item() == pytest.approx(
        ((noise - x_data) ** 2).mean().item()
    )


@pytest.mark.parametrize("steps, shift", [(1, 1.0), (3, 1.0), (7, 3.0)])
def test_euler_is_exact_on_straight_lines(steps, shift):
    x_data = torch.randn(2, 5, dtype=torch.float64)
    noise = torch.randn(2, 5, dtype=torch.float64)
    # The exact flow of a single data point: v(x, t) = (x - x_data) / t, straight to x_data.
    out = euler_sample(lambda x, t: (x - x_data) / t[:, None], noise, steps, shift)
    assert torch.allclose(out, x_data, atol=1e-12)
    # A constant field moves noise by exactly -v.
    out = euler_sample(lambda x, t: torch.ones_like(x), noise, steps, shift)
    assert torch.allclose(out, noise - 1, atol=1e-12)


def test_time_grids():
    times = sampling_times(4)
    assert torch.allclose(times, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    shifted = shift_time(torch.tensor([0.0, 0.5, 1.0]), 3.0)
    assert torch.allclose(shifted, torch.tensor([0.0, 0.75, 1.0]))
    t = logit_normal(200_000, mean=0.0, std=1.0, generator=torch.Generator().manual_seed(0))
    assert t.min() > 0 and t.max() < 1
    assert t.median().item() == pytest.approx(0.5, abs=0.01)
    t = logit_normal(200_000, mean=1.0, std=0.5, generator=torch.Generator().manual_seed(0))
    assert t.median().item() == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.01)


class Recorder(torch.nn.Module):
    """v = x * (1 + mean(text)), so the two branches differ; counts forward calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t, text, mask):
        self.calls += 1
        gain = (text * mask[..., None]).sum(dim=(1, 2)) / mask.sum(1).clamp(min=1)
        return x * (1 + gain[:, None])


def test_guidance_mixes_both_branches_in_one_forward():
    model = Recorder()
    x, t = torch.randn(2, 3), torch.full((2,), 0.5)
    text, mask = torch.full((2, 4, 1), 2.0), torch.ones(2, 4, dtype=torch.bool)
    null, null_mask = torch.zeros(2, 2, 1), torch.ones(2, 2, dtype=torch.bool)
    v = guided(model, text, mask, null, null_mask, scale=3.0)(x, t)
    assert model.calls == 1
    v_cond, v_uncond = x * 3, x * 1
    assert torch.allclose(v, v_uncond + 3.0 * (v_cond - v_uncond))
    assert torch.allclose(guided(model, text, mask, null, null_mask, 1.0)(x, t), v_cond)
