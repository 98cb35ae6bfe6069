import math

import pytest
import torch

from univid.flow import (
    SOLVERS,
    Given,
    euler_sample,
    expand_time,
    flow_loss,
    guided,
    logit_normal,
    nfe,
    ode_sample,
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


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("steps, shift", [(1, 1.0), (4, 1.0), (5, 3.0)])
def test_every_solver_is_exact_on_straight_lines(solver, steps, shift):
    x_data = torch.randn(2, 5, dtype=torch.float64)
    noise = torch.randn(2, 5, dtype=torch.float64)
    out = ode_sample(lambda x, t: (x - x_data) / t[:, None], noise, steps, solver, shift)
    assert torch.allclose(out, x_data, atol=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
def test_given_frames_stay_exact_for_every_solver_while_the_others_move(solver):
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 3, 4, 2, 2, generator=gen)
    mask = torch.tensor([[True, False, False, True], [False, True, False, False]])
    given = Given(torch.randn(2, 3, 4, 2, 2, generator=gen), mask)
    seen = []

    def velocity(x, t):  # every frame's velocity depends on all frames and on its own time
        seen.append((x.clone(), t.clone()))
        return x.mean(dim=2, keepdim=True) + torch.sin(x) * (1 + expand_time(t, x))

    out = ode_sample(velocity, noise, 5, solver, 2.0, given=given)
    fixed = given.pixels(out).expand_as(out)
    assert torch.equal(out[fixed], given.x[fixed])
    assert (out != noise)[~fixed].all()
    assert len(seen) == nfe(solver, 5)
    for x, t in seen:  # the model always sees the given frames as they are, at t = 0
        assert t.shape == (2, 4) and (t[mask] == 0).all() and (t[~mask] > 0).all()
        assert torch.equal(x[fixed], given.x[fixed])


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_solvers_match_their_closed_form_on_dx_dt_equal_x(steps):
    # dx/dt = x from t = 1 to 0: per step of h = -1/steps Euler multiplies by 1 + h, the
    # second-order steps by 1 + h + h^2/2 (Heun's last step is Euler); nfe() counts the calls.
    h = -1.0 / steps
    expected = {
        "euler": (1 + h) ** steps,
        "heun": (1 + h + h * h / 2) ** (steps - 1) * (1 + h),
        "midpoint": (1 + h + h * h / 2) ** steps,
    }
    for solver in SOLVERS:
        calls = []

        def v(x, t, calls=calls):
            calls.append(t)
            return x

        out = ode_sample(v, torch.ones(1, dtype=torch.float64), steps, solver)
        # The time grid is float32, so h is exact only to float32 precision.
        assert out.item() == pytest.approx(expected[solver], rel=1e-6)
        assert len(calls) == nfe(solver, steps)


def test_second_order_solvers_converge_faster_than_euler():
    exact = math.exp(-1.0)
    error = {}
    for solver in SOLVERS:
        for steps in (8, 16):
            out = ode_sample(lambda x, t: x, torch.ones(1, dtype=torch.float64), steps, solver)
            error[solver, steps] = abs(out.item() - exact)
    assert 1.8 < error["euler", 8] / error["euler", 16] < 2.2  # first order
    assert 3.5 < error["midpoint", 8] / error["midpoint", 16] < 4.5  # second order
    assert error["heun", 16] < error["euler", 16] / 5


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="solver"):
        ode_sample(lambda x, t: x, torch.ones(1), 2, "rk4")


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
        if mask is None:  # no caption has padding
            mask = torch.ones(text.shape[:2], dtype=torch.bool)
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
