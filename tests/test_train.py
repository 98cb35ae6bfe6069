import json
import math
import sys
from pathlib import Path

import pytest
import torch

import univid
from univid.build import build_model
from univid.config import apply_overrides, resolve_config
from univid.data.shapes import ShapesWorld
from univid.flow import flow_loss, logit_normal
from univid.train.checkpoint import complete_checkpoints, latest_checkpoint
from univid.train.loop import Trainer, lr_factor


@pytest.mark.parametrize("backbone", ["encoder", "dit"])
def test_tiny_model_overfits_one_video(text_encoder, backbone):
    """One clip, one noise draw, fresh t each step: the loss must fall at least 10x."""
    torch.manual_seed(0)
    cfg = resolve_config("tiny", ["model.width=64", "model.heads=4", f"model.backbone={backbone}"])
    model = build_model(cfg.model)
    video, caption, _ = ShapesWorld(frames=4, height=16, width=16, seed=0)[0]
    x = torch.from_numpy(video).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    x, noise = x.expand(8, -1, -1, -1, -1), torch.randn(1, *x.shape[1:]).expand(8, -1, -1, -1, -1)
    text, mask = text_encoder.encode([caption] * 8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        t = logit_normal(8, generator=gen)
        loss = flow_loss(lambda xt, tt: model(xt, tt, text, mask), x, noise, t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first / 10, (first, last)


@pytest.mark.parametrize("backbone", ["encoder", "dit"])
def test_checkpoint_round_trip_gives_identical_next_loss(tmp_path, backbone):
    overrides = ["train.steps=6", "train.ckpt_every=3", "train.keep_last=1"]
    cfg = resolve_config("tiny", [*overrides, f"model.backbone={backbone}"])
    a = Trainer(cfg, tmp_path, progress=False)
    a.run()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000006"]
    assert not list((tmp_path / "checkpoints").glob(".tmp*"))
    loss_a, _ = a.train_step()

    b = Trainer(cfg, tmp_path, progress=False)
    assert b.resume() == latest_checkpoint(tmp_path)
    assert b.step == 6
    loss_b, _ = b.train_step()
    assert loss_a.item() == loss_b.item()
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


# The mixed run draws a conditioning mode and per-frame times per sample (issue 15).
MIXED = ["model.patch=1,4,4", "flow.mix_t2v=2", "flow.mix_per_frame=1", "flow.mix_i2v=1"]
MIXED += ["flow.mix_extend=1", "flow.mix_interpolate=1"]


@pytest.mark.parametrize("extra", [[], MIXED], ids=["t2v", "mixed"])
def test_resumed_run_matches_uninterrupted_run(tmp_path, extra):
    base = ["train.steps=8", "train.ckpt_every=4", "train.log_every=1"]
    cfg = resolve_config("tiny", [*base, *extra])
    Trainer(cfg, tmp_path / "full", progress=False).run()
    short = apply_overrides(cfg, ["train.steps=4"])
    Trainer(short, tmp_path / "cut", progress=False).run()
    resumed = Trainer(cfg, tmp_path / "cut", progress=False)
    resumed.resume()
    resumed.run()

    def losses(run):
        rows = (tmp_path / run / "metrics.csv").read_text().splitlines()[1:]
        return [row.split(",")[1] for row in rows]

    assert losses("full") == losses("cut") and len(losses("full")) == 8
    cfg_saved = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert cfg_saved["train"]["steps"] == 8
    for override in extra[1:]:  # the mix weights are part of the saved run
        key, value = override.split("=")
        section, name = key.split(".")
        assert cfg_saved[section][name] == float(value)


def test_lr_schedule():
    assert lr_factor(0, 10, 100, "cosine") == 0.1
    assert lr_factor(9, 10, 100, "cosine") == 1.0
    assert abs(lr_factor(100, 10, 100, "cosine") - 0.1) < 1e-12
    assert lr_factor(50, 10, 100, "constant") == 1.0


@pytest.mark.gpu
def test_cuda_bf16_training_and_sampling(tmp_path):
    cfg = resolve_config("tiny", ["train.device=cuda", "train.steps=4", "train.sample_every=4"])
    trainer = Trainer(cfg, tmp_path, progress=False)
    assert trainer.amp == torch.bfloat16
    row = trainer.run()
    assert math.isfinite(row["loss"])
    assert (tmp_path / "samples" / "step_00000004.gif").is_file()


@pytest.mark.slow
def test_compiled_and_checkpointed_blocks_train_like_eager_ones(tmp_path):
    """train.compile (regional torch.compile) and activation checkpointing change no numbers
    beyond fp32 rounding; about a minute of compiling on 2 cores."""
    cfg = resolve_config("tiny", ["train.device=cpu"])
    eager = Trainer(cfg, tmp_path / "eager", progress=False)
    fast_cfg = apply_overrides(cfg, ["train.compile=true", "train.activation_checkpointing=true"])
    fast = Trainer(fast_cfg, tmp_path / "fast", progress=False)
    assert all(hasattr(b, "_checkpoint_wrapped_module") for b in fast.model.blocks)
    for _ in range(3):
        (loss_e, gnorm_e), (loss_f, gnorm_f) = eager.train_step(), fast.train_step()
        assert math.isclose(loss_e.item(), loss_f.item(), rel_tol=1e-5)
        assert math.isclose(gnorm_e.item(), gnorm_f.item(), rel_tol=1e-4)
    for pe, pf in zip(eager.model.parameters(), fast.model.parameters()):
        torch.testing.assert_close(pe, pf, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("prefetch", ["auto", "thread"])
def test_steps_between_log_intervals_read_nothing_from_the_device(tmp_path, monkeypatch, prefetch):
    """At default guard settings (non-finite guard and spike watch on) a step makes no host
    sync: no tensor is read from univid's code until the flags are read at a host event."""
    cfg = resolve_config(
        "tiny", ["train.device=cpu", "train.val_every=0", f"data.prefetch={prefetch}"]
    )
    assert cfg.train.max_nonfinite and cfg.train.spike_factor  # the defaults: guards on
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.update()  # the first step builds the optimizer state and starts the prefetcher
    source = str(Path(univid.__file__).parent)
    reads = []

    def counted(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(source):
                reads.append(f"{name} at {caller}:{sys._getframe(1).f_lineno}")
            return original(self, *args, **kwargs)

        return read

    for name in ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    for _ in range(5):
        trainer.update()
    assert reads == []
    trainer.settle()  # the logging interval: now the flags are read, once
    assert len(reads) == 1 and reads[0].startswith("tolist")
    assert trainer.step == 6 and trainer.interval.updates == 6


def test_batches_built_ahead_on_a_thread_train_exactly_like_batches_built_in_the_step(tmp_path):
    runs = {}
    for prefetch in ("off", "thread"):
        cfg = resolve_config("tiny", ["train.device=cpu", f"data.prefetch={prefetch}"])
        trainer = Trainer(cfg, tmp_path / prefetch, progress=False)
        assert trainer.batches is None  # started at the first step
        runs[prefetch] = [trainer.train_step()[0].item() for _ in range(4)]
        assert (trainer.batches.thread is not None) == (prefetch == "thread")
        trainer.close()
    assert runs["off"] == runs["thread"]
