import copy
import os

import numpy as np
import pytest
import torch

import univid
import univid.cli
import univid.flow
from univid import speed
from univid.device import autocast_dtype
from univid.errors import InputError
from univid.model.dit import Attention, DiTStream
from univid.model.encoder import EncoderStream
from univid.model.rope import apply_rope, rope_angles, rope_tables
from univid.step_cache import StepCache, step_cache

PROMPT = "a red circle moving right"


def tiny_dit(width: int = 48, seed: int = 0) -> DiTStream:
    torch.manual_seed(seed)
    model = DiTStream(
        in_channels=3, patch=(1, 2, 2), width=width, depth=2, heads=4, text_dim=16
    ).eval()
    # The init zeroes the gates, modulations and head (the output would be exactly 0): add
    # noise everywhere so that the output depends on every block and on attention.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)
    return model


def inputs(seed: int = 1, text_len: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 2, 4, 4, generator=g)  # 2 x 2 x 2 = 8 video tokens
    t = torch.rand(2, generator=g)
    text = torch.randn(2, text_len, 16, generator=g)
    mask = torch.ones(2, text_len, dtype=torch.bool)
    mask[1, 2:] = False  # the second caption has 3 padding tokens
    return x, t, text, mask


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def loss_and_grads(model, x, t, text, mask):
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    model.zero_grad(set_to_none=True)
    out = model(x, t, text, mask)
    loss = (out * weights).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), loss.detach(), grads


def assert_grads_close(a: dict, b: dict, rel: float):
    # Checkpoint/compile wrappers rename parameters; compare in order.
    assert len(a) == len(b)
    for (name, ga), gb in zip(a.items(), b.values()):
        assert ga.shape == gb.shape, name
        assert (ga - gb).norm() <= rel * gb.norm() + 1e-9, name


# ---- RoPE ------------------------------------------------------------------------------------


def rotate_reference(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Explicit 2x2 rotation of each channel pair (2i, 2i+1) of x (..., N, heads?, D)."""
    x = x.double()
    out = torch.empty_like(x)
    for i in range(angles.shape[-1]):
        c, s = torch.cos(angles[:, i]), torch.sin(angles[:, i])
        if x.dim() == 4:  # (B, N, heads, D): angles per token, the same for every head
            c, s = c[:, None], s[:, None]
        x0, x1 = x[..., 2 * i], x[..., 2 * i + 1]
        out[..., 2 * i] = x0 * c - x1 * s
        out[..., 2 * i + 1] = x0 * s + x1 * c
    return out


def test_rope_tables_rotate_each_channel_pair():
    torch.manual_seed(0)
    N, heads, head_dim = 7, 3, 12
    angles = torch.randn(N, head_dim // 2, dtype=torch.float64) * 4
    cos, sin = rope_tables(angles)
    assert cos.dtype == sin.dtype == torch.float32 and cos.shape == (N, head_dim)

    x = torch.randn(2, N, heads, head_dim)
    y = apply_rope(x, (cos[:, None], sin[:, None]))
    assert y.dtype == torch.float32
    assert torch.allclose(y.double(), rotate_reference(x, angles), atol=1e-6)

    x2 = torch.randn(N, head_dim)
    y2 = apply_rope(x2, (cos, sin))
    assert torch.allclose(y2.double(), rotate_reference(x2, angles), atol=1e-6)


def test_rope_scores_are_unchanged_by_a_common_shift_of_positions():
    torch.manual_seed(0)
    head_dim = 24
    q, k = torch.randn(6, head_dim), torch.randn(9, head_dim)
    pos_q = torch.randint(-5, 6, (6, 3)).double()
    pos_k = torch.randint(-5, 6, (9, 3)).double()

    def scores(pq, pk):
        rq = apply_rope(q, rope_tables(rope_angles(pq, head_dim)))
        rk = apply_rope(k, rope_tables(rope_angles(pk, head_dim)))
        return rq @ rk.T

    base = scores(pos_q, pos_k)
    for offset in ([3.0, 0.0, 0.0], [0.0, -4.0, 7.0], [11.0, 2.0, -9.0]):
        s = torch.tensor(offset, dtype=torch.float64)
        assert torch.allclose(scores(pos_q + s, pos_k + s), base, atol=1e-5)
    # Shifting only the queries moves the relative positions, which must change the scores.
    assert not torch.allclose(scores(pos_q + 1, pos_k), base, atol=1e-3)


# ---- attention kernels -----------------------------------------------------------------------


@pytest.mark.parametrize("masked", [True, False])
def test_naive_attention_equals_sdpa(masked):
    model = tiny_dit()
    x, t, text, mask = inputs()
    mask = mask if masked else None
    with torch.no_grad():
        fused = model(x, t, text, mask)
        speed.swap_attention(model, speed.NaiveAttention)
        naive = model(x, t, text, mask)
    assert torch.allclose(naive, fused, atol=1e-5)
    # The comparison means something only if attention shapes the output: attending to the
    # padding of caption 2 (the masked vs unmasked runs) must change it well beyond 1e-5.
    with torch.no_grad():
        other = model(x, t, text, None if masked else inputs()[3])
    assert (other[1] - naive[1]).abs().max() > 1e-3


def test_naive_attention_gradients_equal_sdpa():
    model = tiny_dit()
    x, t, text, mask = inputs()
    out_f, loss_f, grads_f = loss_and_grads(model, x, t, text, mask)
    speed.swap_attention(model, speed.NaiveAttention)
    out_n, loss_n, grads_n = loss_and_grads(model, x, t, text, mask)
    assert rel_err(out_n, out_f) < 1e-5
    assert abs(loss_n - loss_f) <= 1e-4 * abs(loss_f)
    assert_grads_close(grads_n, grads_f, 1e-4)


def test_no_mask_equals_all_true_mask_and_padding_is_never_attended():
    model = tiny_dit()
    x, t, text, _ = inputs()
    with torch.no_grad():
        none = model(x, t, text, None)
        full = model(x, t, text, torch.ones(2, 5, dtype=torch.bool))
        assert torch.allclose(none, full, atol=1e-6)
        # The same captions padded with 3 zero tokens that the mask hides.
        padded = torch.cat([text, torch.zeros(2, 3, 16)], dim=1)
        pad_mask = torch.ones(2, 8, dtype=torch.bool)
        pad_mask[:, 5:] = False
        assert torch.allclose(model(x, t, padded, pad_mask), none, atol=1e-5)


def test_speed_attention_contexts():
    model = tiny_dit()
    x, t, text, mask = inputs()
    with torch.no_grad():
        for m in (mask, None):
            default = model(x, t, text, m)
            for backend in ("math", "flash"):
                with speed.attention(model, backend):
                    out = model(x, t, text, m)
                assert torch.allclose(out, default, atol=1e-5), (backend, m is None)
        with speed.attention(model, "naive"):
            assert all(isinstance(block.attention, speed.NaiveAttention) for block in model.blocks)
            naive = model(x, t, text, mask)
        assert all(isinstance(block.attention, Attention) for block in model.blocks)
        assert torch.allclose(naive, model(x, t, text, mask), atol=1e-5)

    # The backend is restored also when the body raises.
    with pytest.raises(RuntimeError), speed.attention(model, "naive"):
        raise RuntimeError("boom")
    assert all(isinstance(block.attention, Attention) for block in model.blocks)

    with pytest.raises(InputError, match="unknown"), speed.attention(model, "fastest"):
        pass
    encoder = EncoderStream(width=48, depth=1, heads=4, text_dim=16)
    with pytest.raises(InputError, match="naive"), speed.attention(encoder, "naive"):
        pass


# ---- compile, checkpointing, compile cache ---------------------------------------------------


@pytest.mark.slow
def test_compiled_blocks_equal_eager(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    eager = tiny_dit()
    compiled = copy.deepcopy(eager)
    speed.prepare_blocks(compiled, checkpointing=False, compile_blocks=True)
    x, t, text, mask = inputs()
    out_e, loss_e, grads_e = loss_and_grads(eager, x, t, text, mask)
    out_c, loss_c, grads_c = loss_and_grads(compiled, x, t, text, mask)
    assert torch.allclose(out_c, out_e, atol=1e-5)
    assert abs(loss_c - loss_e) <= 1e-4 * abs(loss_e)
    assert_grads_close(grads_c, grads_e, 1e-4)
    # Inductor wrote its cache where it was told, not into the home folder.
    assert any(tmp_path.iterdir())


def test_use_compile_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("UNIVID_COMPILE_CACHE", str(tmp_path / "cc"))
    assert speed.use_compile_cache() == tmp_path / "cc"
    assert (tmp_path / "cc").is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc")

    # A cache folder chosen by the user wins.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("UNIVID_COMPILE_CACHE", str(tmp_path / "other"))
    assert speed.use_compile_cache() == tmp_path / "mine"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    assert not (tmp_path / "other").exists()


def test_checkpointed_blocks_equal_eager():
    eager = tiny_dit()
    wrapped = copy.deepcopy(eager)
    speed.prepare_blocks(wrapped, checkpointing=True, compile_blocks=False)
    assert all(hasattr(block, "_checkpoint_wrapped_module") for block in wrapped.blocks)
    x, t, text, mask = inputs()
    out_e, loss_e, grads_e = loss_and_grads(eager, x, t, text, mask)
    out_w, loss_w, grads_w = loss_and_grads(wrapped, x, t, text, mask)
    assert torch.allclose(out_w, out_e, atol=1e-6)
    assert abs(loss_w - loss_e) <= 1e-6 * max(1.0, abs(loss_e))
    for (name, ga), gb in zip(grads_w.items(), grads_e.values()):
        assert torch.allclose(ga, gb, atol=1e-6), name


# ---- bf16 autocast ---------------------------------------------------------------------------


def test_bf16_autocast_is_close_to_fp32():
    model = tiny_dit()
    x, t, text, mask = inputs()
    with torch.no_grad():
        fp32 = model(x, t, text, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x, t, text, mask).float()
    assert torch.isfinite(bf16).all()
    assert 0 < rel_err(bf16, fp32) < 2e-2


def test_autocast_dtype():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    assert autocast_dtype("fp32", cpu) is None


# ---- step cache ------------------------------------------------------------------------------


def test_step_cache_threshold_zero_never_skips():
    model = tiny_dit()
    cache = StepCache(0.0)
    with torch.no_grad():
        for step in range(4):
            x, t, text, mask = inputs(seed=step)
            with step_cache(model, cache):
                cached = model(x, t, text, mask)
            assert torch.equal(cached, model(x, t, text, mask))
    assert (cache.calls, cache.skipped, cache.computed) == (4, 0, 4)


class AddResidual(torch.nn.Module):
    """A stand-in for all the blocks: adds a fixed residual, as a skipped step does."""

    def __init__(self, residual: torch.Tensor) -> None:
        super().__init__()
        self.residual = residual

    def forward(self, seq, cond, rope, mask, text_len=0):
        return seq + self.residual


def test_step_cache_huge_threshold_reuses_the_residual():
    model = tiny_dit()
    x, t, text, mask = inputs()
    cache = StepCache(1e9)
    with torch.no_grad():
        with step_cache(model, cache):
            first = model(x, t, text, mask)
        assert torch.equal(first, model(x, t, text, mask))  # the first call runs the blocks
        with step_cache(model, cache):
            assert torch.allclose(model(x, t, text, mask), first, atol=1e-6)
        residual = cache.residual.clone()
        x2, t2 = x + 0.3 * torch.randn_like(x), t * 0.9
        with step_cache(model, cache):
            skipped = model(x2, t2, text, mask)
        assert (cache.calls, cache.skipped) == (3, 2)
        # A skipped step is exactly the model with the blocks replaced by the old residual.
        reference = copy.deepcopy(model)
        reference.blocks = AddResidual(residual)
        assert torch.equal(skipped, reference(x2, t2, text, mask))
        assert not torch.allclose(skipped, model(x2, t2, text, mask), atol=1e-4)

        cache.reset()
        assert cache.calls == cache.skipped == 0 and cache.residual is None
        with step_cache(model, cache):
            cached = model(x2, t2, text, mask)
        assert torch.equal(cached, model(x2, t2, text, mask))
        assert (cache.calls, cache.skipped) == (1, 0)

    with pytest.raises(ValueError, match=">= 0"):
        StepCache(-0.1)


@pytest.fixture(scope="module")
def pipe():
    return univid.Pipeline.from_pretrained("shapes-tiny", device="cpu")


def test_pipeline_step_cache(pipe):
    plain = pipe(PROMPT, num_steps=8)
    assert pipe.last_cache is None
    assert np.array_equal(pipe(PROMPT, num_steps=8, step_cache=0.0), plain)
    cached = pipe(PROMPT, num_steps=8, step_cache=0.5)
    assert pipe.last_cache.calls == 8  # euler, guidance batched: one forward per step
    assert pipe.last_cache.skipped > 0
    assert cached.shape == plain.shape and cached.dtype == np.uint8


def test_pipeline_solvers_and_bad_speed_arguments(pipe):
    video = pipe(PROMPT, num_steps=4, solver="heun")
    assert video.shape == (8, 32, 32, 3) and video.dtype == np.uint8
    with pytest.raises(InputError, match="solver"):
        pipe(PROMPT, num_steps=2, solver="rk4")
    with pytest.raises(InputError, match="step_cache"):
        pipe(PROMPT, num_steps=2, step_cache=-0.1)
    for shift in (0.0, -1.0):
        with pytest.raises(InputError, match="shift"):
            pipe(PROMPT, num_steps=2, shift=shift)


# ---- int8 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["int8-weight", "int8-dynamic"])
def test_int8_quantisation_is_close_to_fp32(mode):
    pytest.importorskip("torchao")
    model = tiny_dit(width=64)
    x, t, text, mask = inputs()
    quantised = speed.quantize(copy.deepcopy(model), mode)
    with torch.no_grad():
        ref, out = model(x, t, text, mask), quantised(x, t, text, mask)
    assert torch.isfinite(out).all()
    assert 0 < rel_err(out, ref) < 5e-2
    for block in quantised.blocks:
        # The token-wise linears are quantised, the adaLN modulation stays plain float.
        assert type(block.qkv.weight) is not torch.nn.Parameter
        assert type(block.modulation[1].weight) is torch.nn.Parameter
        assert block.modulation[1].weight.dtype == torch.float32
    assert type(quantised.modulation_out[1].weight) is torch.nn.Parameter


def test_quantize_none_and_unknown():
    model = tiny_dit()
    assert speed.quantize(model, "none") is model
    with pytest.raises(InputError, match="unknown"):
        speed.quantize(model, "int4")


# ---- command line ----------------------------------------------------------------------------


def test_cli_choices_are_the_library_values():
    """Each option's allowed values are defined once, in the library, and the parser reads them
    from there; config checks use the same tuples."""
    import univid.config
    import univid.device

    parser = univid.cli.build_parser()
    generate = parser._subparsers._group_actions[0].choices["generate"]
    choices = {a.dest: tuple(a.choices) for a in generate._actions if a.choices is not None}
    assert choices["solver"] == univid.flow.SOLVERS
    assert choices["attention"] == speed.ATTENTION_BACKENDS
    assert choices["quantize"] == speed.QUANTIZATION
    assert choices["precision"] == univid.device.PRECISIONS
    assert choices["device"] == univid.device.DEVICES
    assert univid.config.choices()["flow.solver"] is univid.flow.SOLVERS
    assert univid.config.choices()["train.precision"] is univid.device.PRECISIONS
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "x", "--out", "v.gif", "--solver", "rk4"])


def test_cli_generate_with_speed_options(tmp_path, capsys):
    out = tmp_path / "v.npy"
    args = ["generate", PROMPT, "--out", str(out), "--steps", "3", "--device", "cpu"]
    args += ["--solver", "midpoint", "--step-cache", "0.1", "--attention", "math"]
    assert univid.cli.main(args) == 0
    video = np.load(out)
    assert video.shape == (8, 32, 32, 3) and video.dtype == np.uint8

    assert univid.cli.main(["generate", PROMPT, "--out", str(out), "--solver", "rk4"]) == 2
    assert "rk4" in capsys.readouterr().err


@pytest.mark.gpu
def test_cuda_kernels_bf16_and_compile_follow_the_fp32_math_path(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    model = tiny_dit(width=64).cuda()
    x, t, text, mask = (v.cuda() for v in inputs())
    with torch.no_grad(), speed.attention(model, "math"):
        reference = model(x, t, text, None)
    with torch.no_grad():
        for backend in ("flash", "efficient", "cudnn"):
            with speed.attention(model, backend), torch.autocast("cuda", dtype=torch.bfloat16):
                try:
                    out = model(x, t, text, None)
                except RuntimeError:  # a kernel this GPU does not have
                    continue
            assert rel_err(out.float(), reference) < 2e-2, backend
        with speed.attention(model, "efficient"):  # the fused kernel that takes a mask
            masked = model(x, t, text, mask)
        with speed.attention(model, "math"):
            assert rel_err(masked, model(x, t, text, mask)) < 1e-4
    compiled = copy.deepcopy(model)
    speed.prepare_blocks(compiled, checkpointing=False, compile_blocks=True)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert rel_err(compiled(x, t, text, None).float(), reference) < 2e-2
