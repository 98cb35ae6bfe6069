"""Per-frame time: the model, the path and loss, the sampler's given frames, the training mix."""

from __future__ import annotations

import collections

import pytest
import torch

from univid.build import build_model
from univid.config import resolve_config
from univid.config.sections import MODES
from univid.data.shapes import ShapesWorld
from univid.errors import ConfigError
from univid.flow import SOLVERS, Given, expand_time, flow_loss_per_sample, ode_sample, sample_path
from univid.model.dit import DiTStream
from univid.model.encoder import EncoderStream
from univid.parallel import Dist
from univid.train.batches import BatchPlan

MIX = [
    "flow.mix_t2v=2",
    "flow.mix_per_frame=1",
    "flow.mix_i2v=1",
    "flow.mix_extend=1",
    "flow.mix_interpolate=1",
]
TINY_MIX = ["model.patch=1,4,4", *MIX]

BACKBONES = [
    (DiTStream, {"adaln": "block"}),
    (DiTStream, {"adaln": "shared"}),
    (EncoderStream, {"time_mode": "token+add"}),
]


def random_model(cls, kwargs, pt=2):
    torch.manual_seed(0)
    model = cls(
        patch=(pt, 4, 4), width=48, depth=2, heads=2, text_dim=16, prediction="data", **kwargs
    )
    for p in model.parameters():  # zero-initialised gates would hide the time altogether
        torch.nn.init.normal_(p, std=0.05)
    return model


def inputs(batch=3, frames=8):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, frames, 16, 16, generator=gen)
    text = torch.randn(batch, 5, 16, generator=gen)
    mask = torch.ones(batch, 5, dtype=torch.bool)
    mask[0, 3:] = False
    return x, text, mask


# --------------------------------------------------------------------------------------------
# The model


@pytest.mark.parametrize(("cls", "kwargs"), BACKBONES)
def test_per_frame_time_with_all_frames_equal_is_per_sample_time_bit_for_bit(cls, kwargs):
    model = random_model(cls, kwargs)
    x, text, mask = inputs()
    t = torch.tensor([0.1, 0.5, 0.93])
    with torch.no_grad():
        scalar = model(x, t, text, mask)
        per_frame = model(x, t[:, None].expand(3, 4).contiguous(), text, mask)
        varied = model(x, torch.tensor([[0.0, 0.5, 0.5, 0.5]] * 3), text, mask)
    assert torch.equal(scalar, per_frame)
    assert not torch.equal(scalar[1], varied[1])  # the frames' times do reach the output


def test_a_frames_time_changes_its_own_tokens_modulation():
    """Only frame 2's time changes: with attention cut (no mixing across tokens at depth 0
    of a model without blocks) only frame 2's output may change."""
    model = random_model(DiTStream, {"adaln": "block"}, pt=1)
    model.blocks = type(model.blocks)()  # no blocks: the head sees each token's own modulation
    x, text, mask = inputs(frames=4)
    a = torch.full((3, 4), 0.5)
    b = a.clone()
    b[:, 2] = 0.9
    with torch.no_grad():
        out_a, out_b = model(x, a, text, mask), model(x, b, text, mask)
    changed = (out_a != out_b).flatten(3).any(-1).any(1)  # (B, T)
    assert changed[:, 2].all() and not changed[:, [0, 1, 3]].any()


def test_bad_time_shapes_are_refused():
    x, text, mask = inputs()
    model = random_model(DiTStream, {"adaln": "block"})
    with pytest.raises(ValueError, match=r"one time per latent frame"):
        model(x, torch.rand(3, 8), text, mask)  # 8 frames, but T' = 8 / 2 = 4
    encoder = random_model(EncoderStream, {"time_mode": "token"})
    with pytest.raises(ValueError, match="token\\+add"):
        encoder(x, torch.rand(3, 4), text, mask)


# --------------------------------------------------------------------------------------------
# The path and the loss


def test_path_puts_given_frames_on_the_data_and_the_rest_on_their_own_line():
    gen = torch.Generator().manual_seed(0)
    x_data, noise = (
        torch.randn(2, 3, 4, 5, 5, generator=gen),
        torch.randn(2, 3, 4, 5, 5, generator=gen),
    )
    t = torch.tensor([[0.0, 0.25, 0.5, 1.0], [0.3, 0.3, 0.0, 0.3]])
    x_t, target = sample_path(x_data, noise, t)
    assert torch.equal(x_t[0, :, 0], x_data[0, :, 0]) and torch.equal(x_t[1, :, 2], x_data[1, :, 2])
    torch.testing.assert_close(x_t[0, :, 1], 0.75 * x_data[0, :, 1] + 0.25 * noise[0, :, 1])
    assert torch.equal(x_t[0, :, 3], noise[0, :, 3])
    assert torch.equal(target, noise - x_data)
    # two pixel frames per latent frame: each time covers its pair
    assert expand_time(
        torch.tensor([[0.2, 0.7]]), torch.zeros(1, 3, 4, 1, 1)
    ).flatten().tolist() == [
        pytest.approx(0.2),
        pytest.approx(0.2),
        pytest.approx(0.7),
        pytest.approx(0.7),
    ]


def test_loss_ignores_given_frames_and_averages_over_the_others():
    gen = torch.Generator().manual_seed(0)
    x_data, noise = (
        torch.randn(2, 3, 4, 5, 5, generator=gen),
        torch.randn(2, 3, 4, 5, 5, generator=gen),
    )
    given = torch.tensor([[True, False, False, False], [True, False, False, True]])
    t = torch.full((2, 4), 0.5).masked_fill(given, 0.0)
    target = noise - x_data
    error = torch.zeros_like(x_data)
    error[:, :, 1] = 1.0  # a unit error on frame 1 of each sample
    error[:, :, 0] = 100.0  # a huge one on frame 0, which both samples are given

    def velocity(xt, tt):
        return target + error

    loss = flow_loss_per_sample(velocity, x_data, noise, t, given)
    # sample 0 averages over 3 frames, one with error 1; sample 1 over 2 frames
    torch.testing.assert_close(loss, torch.tensor([1 / 3, 1 / 2]))
    no_given = flow_loss_per_sample(velocity, x_data, noise, torch.full((2, 4), 0.5))
    assert (no_given > 20).all()  # without the mask the given frame's error counts


# --------------------------------------------------------------------------------------------
# The sampler


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_returns_given_frames_bit_for_bit_and_moves_the_rest(solver):
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 3, 4, 6, 6, generator=gen)
    frames = torch.randn(2, 3, 4, 6, 6, generator=gen) * 3.7
    mask = torch.tensor([[True, False, False, True], [False, True, False, False]])
    seen = []

    def velocity(x, t):  # straight to zero from wherever x is: x_0 = 0
        seen.append(t.clone())
        return x / t.clamp_min(1e-3).reshape(2, 1, 4, 1, 1)

    out = ode_sample(velocity, noise, 5, solver, given=Given(frames, mask))
    keep = expand_time(mask, out).bool().expand_as(out)
    assert torch.equal(out[keep], frames[keep])
    assert out[~keep].abs().max() < 1e-4 * noise.abs().max()  # the others reached the data
    assert all(t.shape == (2, 4) and (t[mask] == 0).all() for t in seen)


def test_no_given_frames_is_the_plain_sampler():
    noise = torch.randn(2, 3, 4, 6, 6)

    def velocity(x, t):
        assert t.shape == (2,)
        return x * 0.5

    assert torch.equal(ode_sample(velocity, noise, 4), ode_sample(velocity, noise, 4, given=None))


# --------------------------------------------------------------------------------------------
# The training mix


def plan(overrides, rank=0, world=1):
    cfg = resolve_config("tiny", [*TINY_MIX, *overrides])
    d = cfg.data
    return BatchPlan(cfg, Dist(rank=rank, world=world), ShapesWorld(d.frames, d.height, d.width))


def test_mode_draws_are_functions_of_seed_and_position():
    p = plan([])
    draws = {}
    counts = collections.Counter()
    for position in range(600):
        t, given = p.times(4, position, torch.Generator().manual_seed(position))
        t2, given2 = p.times(4, position, torch.Generator().manual_seed(position))
        assert torch.equal(t, t2) and torch.equal(given, given2)
        assert (t[given] == 0).all() and (t[~given] > 0).all()
        draws[position] = given.tolist()
        counts[
            "t2v/per_frame"
            if not given.any()
            else "i2v"
            if given.tolist() == [True, False, False, False]
            else "interpolate"
            if given.tolist() == [True, False, False, True]
            else "extend"
        ] += 1
    # weights 2 + 1 : 1 : 1 : 1 of 6 -> t2v or per_frame 1/2, the others 1/6 each
    assert abs(counts["t2v/per_frame"] / 600 - 0.5) < 0.07
    for mode in ("i2v", "extend", "interpolate"):
        assert abs(counts[mode] / 600 - 1 / 6) < 0.05, counts
    other_seed = plan(["train.seed=1"])
    assert any(
        other_seed.times(4, q, torch.Generator().manual_seed(q))[1].tolist() != draws[q]
        for q in range(50)
    )


def test_a_t2v_only_mix_keeps_the_old_draws():
    cfg = resolve_config("tiny")
    d = cfg.data
    p = BatchPlan(cfg, Dist(), ShapesWorld(d.frames, d.height, d.width))
    t, given = p.times(4, 7, torch.Generator().manual_seed(3))
    assert t.shape == (1,) and given is None
    batch = p.batch(0, 0).micro[0]
    assert batch.t.shape == (cfg.train.batch_size,) and batch.given is None


def test_two_ranks_draw_what_one_process_draws():
    one = plan(["train.batch_size=4"]).batch(8, 2).micro[0]
    halves = [plan(["train.batch_size=2"], rank=r, world=2).batch(8, 2).micro[0] for r in (0, 1)]
    for key in ("t", "given", "noise", "x"):
        assert torch.equal(getattr(one, key), torch.cat([getattr(h, key) for h in halves])), key


def test_modes_need_enough_latent_frames():
    p = plan(["model.patch=2,4,4", "flow.mix_t2v=0", "flow.mix_per_frame=0", "flow.mix_i2v=0"])
    with pytest.raises(
        ConfigError, match="mix_(extend|interpolate)=1 needs 3 or more latent frames"
    ):
        p.batch(0, 0)


def test_mix_weights_are_checked():
    with pytest.raises(ConfigError, match="must not all be 0"):
        resolve_config("tiny", [f"flow.mix_{m}=0" for m in MODES])
    with pytest.raises(ConfigError, match="flow.mix_i2v"):
        resolve_config("tiny", ["flow.mix_i2v=-1"])
    with pytest.raises(ConfigError, match="token\\+add"):
        resolve_config(
            "tiny", ["model.backbone=encoder", "model.time_mode=token", "flow.mix_i2v=1"]
        )


# --------------------------------------------------------------------------------------------
# Learning to continue a clip


def test_a_tiny_model_learns_to_continue_a_clip(text_encoder):
    """One moving-shape clip; the model is given its first two frames and must draw the last
    two. After training on that clip it does, far closer than before training."""
    torch.manual_seed(0)
    cfg = resolve_config(
        "tiny", ["model.width=64", "model.heads=4", "model.patch=1,4,4", "model.prediction=data"]
    )
    model = build_model(cfg.model)
    video, caption, _ = ShapesWorld(frames=4, height=16, width=16, seed=0)[3]
    x = torch.from_numpy(video).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    given = torch.tensor([[True, True, False, False]])
    text, mask = text_encoder.encode([caption])

    def continuation_error() -> float:
        model.eval()
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(99))
        with torch.no_grad():
            out = ode_sample(
                lambda xt, tt: model(xt, tt, text, mask), noise, 10, given=Given(x, given)
            )
        model.train()
        assert torch.equal(out[:, :, :2], x[:, :, :2])
        return float((out[:, :, 2:] - x[:, :, 2:]).abs().mean())

    before = continuation_error()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    batch = 8
    xs, texts, masks = (
        x.expand(batch, -1, -1, -1, -1),
        text.expand(batch, -1, -1),
        mask.expand(batch, -1),
    )
    for _ in range(250):
        t = torch.rand(batch, 1, generator=gen).expand(batch, 4).masked_fill(given, 0.0)
        noise = torch.randn(xs.shape, generator=gen)
        loss = flow_loss_per_sample(
            lambda xt, tt: model(xt, tt, texts, masks), xs, noise, t, given.expand(batch, 4)
        ).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = continuation_error()
    assert after < before / 4 and after < 0.1, (before, after)
