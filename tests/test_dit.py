import pytest
import torch
from test_model import randomise_zero_inits

from univid.build import build_model
from univid.config import ModelConfig, resolve_config
from univid.info import closed_form_flops, count_flops, describe, parameter_counts
from univid.model.dit import DiTBlock
from univid.model.rope import apply_rope, rope_angles, rope_tables, stream_positions


def dit(**kw) -> torch.nn.Module:
    return build_model(
        ModelConfig(backbone="dit", width=48, depth=2, heads=4, text_dim=16, **kw)
    ).eval()


# ---- RoPE ------------------------------------------------------------------------------------


def test_rope_is_a_rotation():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 40, 24)
    angles = rope_angles(stream_positions(8, (2, 4, 4), None), 24)
    y = apply_rope(x, rope_tables(angles))
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert not torch.allclose(y, x)
    # Position (0, 0, 0) is not rotated at all.
    assert torch.allclose(y[..., 8, :], x[..., 8, :])


def score(q, k, pos_q, pos_k, head_dim=30):
    angles = rope_angles(torch.stack([pos_q, pos_k]).double(), head_dim)
    return (apply_rope(q, rope_tables(angles[:1])) * apply_rope(k, rope_tables(angles[1:]))).sum()


def test_rope_scores_depend_only_on_offsets():
    torch.manual_seed(0)
    q, k = torch.randn(1, 30, dtype=torch.float64), torch.randn(1, 30, dtype=torch.float64)
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 0.0, 7.0])
    base = score(q, k, a, b)
    for shift in ([5.0, 0.0, 0.0], [0.0, -3.0, 2.0], [-7.0, 11.0, 1.0]):
        s = torch.tensor(shift)
        assert torch.allclose(score(q, k, a + s, b + s), base, atol=1e-9)
    # ...and each axis matters: a different offset gives a different score.
    assert not torch.allclose(score(q, k, a, b + torch.tensor([0.0, 1.0, 0.0])), base)
    assert not torch.allclose(score(q, k, a, b + torch.tensor([1.0, 0.0, 0.0])), base)


def test_text_and_video_positions_never_collide():
    grid = (3, 4, 5)
    for text_len in (1, 7, 40):
        pos = stream_positions(text_len, grid, None)
        text, video = pos[:text_len], pos[text_len:]
        assert len(pos) == text_len + 60
        assert (text < 0).all() and (video >= 0).all()
        assert len({tuple(p) for p in pos.tolist()}) == len(pos)
        # Video positions do not depend on the caption length; text is a 1-D sequence.
        assert torch.equal(video, stream_positions(0, grid, None))
        assert torch.equal(text[:, 0], text[:, 1]) and torch.equal(text[:, 0], text[:, 2])


# ---- adaLN-Zero ------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_adaln_zero_blocks_are_the_identity_at_init(shared, mlp):
    torch.manual_seed(0)
    model = dit(adaln="shared" if shared else "block", mlp=mlp)
    x = torch.randn(2, 20, 48)
    c = torch.randn(2, 48)  # any time + caption conditioning
    cond = model.modulation(c).view(2, 6, 48) if shared else c
    cos, sin = rope_tables(rope_angles(stream_positions(4, (1, 4, 4), None), 12))
    keep = torch.ones(2, 1, 1, 20, dtype=torch.bool)
    for block in model.blocks:
        assert isinstance(block, DiTBlock)
        assert torch.equal(block(x, cond, (cos[:, None], sin[:, None]), keep), x)
    # The whole model starts by predicting exactly zero.
    video = torch.randn(2, 3, 4, 8, 8)
    text, mask = torch.randn(2, 4, 16), torch.ones(2, 4, dtype=torch.bool)
    assert torch.count_nonzero(model(video, torch.rand(2), text, mask)) == 0


def test_shared_adaln_saves_the_per_block_modulation_parameters():
    D, depth = 48, 5
    counts = {
        adaln: parameter_counts(
            build_model(
                ModelConfig(backbone="dit", width=D, depth=depth, heads=4, text_dim=16, adaln=adaln)
            )
        )
        for adaln in ("block", "shared")
    }
    one_mlp = D * 6 * D + 6 * D  # Linear(D, 6D)
    saving = (depth - 1) * one_mlp - depth * 6 * D  # minus the per-block offsets
    assert counts["block"]["total"] - counts["shared"]["total"] == saving


# ---- the DiT stream --------------------------------------------------------------------------


def test_dit_batch_equals_items_one_by_one():
    torch.manual_seed(0)
    model = randomise_zero_inits(dit(adaln="shared"))
    x, t = torch.randn(2, 3, 4, 8, 8), torch.rand(2)
    text, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2:] = False
    with torch.no_grad():
        batch = model(x, t, text, mask)
        one = model(x[1:], t[1:], text[1:, :2], mask[1:, :2])
    assert torch.allclose(batch[1:], one, atol=1e-5)


# ---- FLOPs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["encoder", "dit"])
def test_flop_counter_matches_closed_form(backbone):
    cfg = resolve_config("S", [f"model.backbone={backbone}"])
    counted = count_flops(cfg, 8, 64, 64, 32)
    closed = closed_form_flops(cfg, 8, 64, 64, 32)
    assert abs(counted - closed) / closed < 0.05, (counted, closed)
    # A training step (forward + backward) costs about three forwards.
    step = count_flops(cfg, 8, 64, 64, 32, backward=True)
    assert 2.9 < step / counted < 3.1


def test_flops_on_meta_equal_flops_on_cpu():
    cfg = resolve_config("tiny", ["model.backbone=dit"])
    assert count_flops(cfg, 4, 16, 16, 6) == count_flops(cfg, 4, 16, 16, 6, device="cpu")


def test_dit_xl_has_the_size_of_dit_xl():
    info = describe(resolve_config("XL", ["model.backbone=dit"]), 16, 64, 64, 32)
    # DiT-XL/2 has 675 M parameters; ours differs only in its embeddings.
    assert 670e6 < info["params"] < 680e6
