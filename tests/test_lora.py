"""Fine-tuning with LoRA (PEFT): only adapters train and are saved; they load, scale, merge and
resume exactly; the base is never written; a wrong base is one line; 2-rank runs match one."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from univid import lora
from univid.build import load_model_dir
from univid.cli import main
from univid.config import apply_overrides, load_config_file, resolve_config
from univid.data import BadSample
from univid.data.shapes import ShapesWorld
from univid.errors import ConfigError, InputError
from univid.pipeline import Pipeline
from univid.train import Trainer, finetune, train
from univid.train.checkpoint import check_resume, complete_checkpoints

TINY = ["train.sample_every=0", "train.val_every=0", "train.device=cpu"]
FT = ["train.steps=4", "train.ckpt_every=2", "train.log_every=1", "train.warmup=1", "train.lr=0.01"]
WORKER = Path(__file__).with_name("dist_worker.py")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(run: Path) -> list[dict[str, str]]:
    """The metrics rows without their timings."""
    keys = ("step", "loss", "grad_norm", "lr", "samples", "skipped", "nonfinite")
    with (run / "metrics.csv").open() as f:
        return [{k: r[k] for k in keys} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny dit trained for 4 steps: the model to adapt."""
    run = tmp_path_factory.mktemp("base") / "run"
    train(resolve_config("tiny", [*TINY, "train.steps=4"]), run, progress=False)
    return run


@pytest.fixture(scope="module")
def tuned(base, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("tuned") / "run"
    finetune(str(base), [*TINY, *FT, "lora.rank=4"], str(run))
    return run


def inputs(cfg, batch: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    d, m = cfg.data, cfg.model
    x = torch.randn(batch, m.in_channels, d.frames, d.height, d.width, generator=g)
    return x, torch.rand(batch, generator=g), torch.randn(batch, 5, m.text_dim, generator=g)


def forward(model: torch.nn.Module, cfg) -> torch.Tensor:
    x, t, text = inputs(cfg)
    with torch.no_grad():
        return model.eval()(x, t, text, torch.ones(text.shape[:2], dtype=torch.bool))


def test_finetune_trains_and_saves_only_the_adapters_and_never_writes_the_base(base, tuned):
    before = sha(base / "model.safetensors")
    meta, state = lora.read_adapter(tuned)
    assert meta["base"] == str(base.resolve()) and meta["rank"] == 4
    assert meta["base_sha256"] == lora.weights_sha256(load_model_dir(base)[1])
    assert state and all(".lora_A." in k or ".lora_B." in k for k in state)
    # B starts at 0 (the base's output); training moved it.
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in state.items())
    assert not (tuned / "model.safetensors").exists()
    shard = next((complete_checkpoints(tuned)[-1] / "state").glob("*.safetensors"))
    with safe_open(shard, framework="pt") as f:
        keys = list(f.keys())
    assert keys and all(".lora_" in k for k in keys)  # model, EMA and Adam moments: adapters
    assert {k.split(".")[0] for k in keys} == {"model", "ema", "optim"}
    assert sha(base / "model.safetensors") == before
    # The fine-tuned model's base weights are the base's, bit for bit.
    _, adapted = load_model_dir(tuned)
    assert lora.weights_sha256(adapted) == meta["base_sha256"]


def test_the_saved_adapter_loads_to_the_trained_model_exactly(base, tmp_path):
    cfg = resolve_config("tiny", [*TINY, *FT, "lora.rank=4", f"lora.base={base}"])
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.run()
    trained = forward(trainer.ema, cfg)
    pipe = Pipeline.from_pretrained(base, device="cpu").load_lora(tmp_path)
    assert torch.equal(forward(pipe.model, cfg), trained)
    assert not torch.equal(forward(load_model_dir(base)[1], cfg), trained)


def test_scale_merge_and_unload(base, tuned, tmp_path):
    cfg, plain = load_model_dir(base)
    _, model = load_model_dir(base)
    lora.load_adapter(model, tuned, scale=0.0)
    assert torch.equal(forward(model, cfg), forward(plain, cfg))  # scale 0 is the base
    lora.set_scale(model, 1.0)
    unmerged = forward(model, cfg)
    effect = (unmerged - forward(plain, cfg)).abs().max()
    assert effect > 1e-6
    lora.merge_adapter(model)
    assert not lora.has_adapter(model)
    # Merged = unmerged to float rounding: a thousandth of what the adapter changes.
    assert (forward(model, cfg) - unmerged).abs().max() < effect / 1000
    assert main(["export", str(tuned), "--merge-lora", "--out", str(tmp_path / "merged")]) == 0
    _, merged = load_model_dir(tmp_path / "merged")
    assert (forward(merged, cfg) - unmerged).abs().max() < effect / 1000
    # Exported without merging, in fp16: an adapter folder of half the size, that loads.
    assert main(["export", str(tuned), "--dtype", "float16", "--out", str(tmp_path / "half")]) == 0
    full, half = tuned / "adapter.safetensors", tmp_path / "half" / "adapter.safetensors"
    assert half.stat().st_size < 0.6 * full.stat().st_size
    _, model = load_model_dir(base)
    lora.load_adapter(model, tmp_path / "half")
    assert (forward(model, cfg) - unmerged).abs().max() < effect / 100
    pipe = Pipeline.from_pretrained(base, device="cpu").load_lora(tuned, scale=0.5)
    pipe.unload_lora()
    assert torch.equal(forward(pipe.model, cfg), forward(plain, cfg))


def test_generate_and_eval_take_an_adapter(base, tuned, tmp_path):
    out = tmp_path / "v.npy"
    args = ["generate", "a red circle moving right", "--model", str(base), "--steps", "2"]
    assert main([*args, "--lora", str(tuned), "--out", str(out)]) == 0
    with_adapter = np.load(out)
    assert main([*args, "--lora", str(tuned), "--lora-scale", "0", "--out", str(out)]) == 0
    assert main([*args, "--out", str(tmp_path / "b.npy")]) == 0
    assert np.array_equal(np.load(out), np.load(tmp_path / "b.npy"))
    assert not np.array_equal(with_adapter, np.load(out))
    # A fine-tuning run's folder is a model too: base + adapter.
    assert main(["generate", "a red circle moving right", "--model", str(tuned), "--steps", "2",
                 "--out", str(tmp_path / "c.npy")]) == 0  # fmt: skip
    assert np.array_equal(np.load(tmp_path / "c.npy"), with_adapter)
    report = tmp_path / "eval.json"
    argv = ["eval", "--model", str(base), "--lora", str(tuned), "--lora-scale", "0.5"]
    assert main([*argv, "--seeds", "1", "--steps", "1", "--out", str(report)]) == 0
    settings = json.loads(report.read_text())["settings"]
    assert settings["lora"] == str(tuned) and settings["lora_scale"] == 0.5


def test_resume_of_a_lora_run_is_bit_exact(base, tuned, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(tuned, cut)
    shutil.rmtree(cut / "checkpoints" / "step_00000004")
    (cut / "metrics.csv").unlink()
    assert main(["train", "--resume", str(cut)]) == 0
    assert rows(cut) == rows(tuned)[2:]
    assert (cut / "adapter.safetensors").read_bytes() == (
        tuned / "adapter.safetensors"
    ).read_bytes()


def test_a_mismatched_base_is_one_line(base, tuned, tmp_path, capsys):
    other = tmp_path / "other"
    train(resolve_config("tiny", [*TINY, "train.steps=1", "train.seed=5"]), other, progress=False)
    code = main(["generate", "a red circle", "--model", str(other), "--lora", str(tuned),
                 "--out", str(tmp_path / "x.gif")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "was trained on base" in err and "not on this model" in err
    # A base whose weights changed since the run started: its resume is refused.
    changed = tmp_path / "changed"
    shutil.copytree(tuned, changed)
    cfg_text = (changed / "config.json").read_text().replace(str(base.resolve()), str(other))
    (changed / "config.json").write_text(cfg_text)
    for ckpt in complete_checkpoints(changed):
        (ckpt / "config.json").write_text(cfg_text)
    assert main(["train", "--resume", str(changed)]) == 2
    assert "has changed since this run started" in capsys.readouterr().err


def test_wrong_uses_are_one_line(base, tuned, tmp_path, capsys):
    cases = [
        (["finetune", str(base), "--out", str(tmp_path / "a"), "model.width=64"], "come from BASE"),
        (["export", str(base), "--merge-lora", "--out", str(tmp_path / "c")], "no LoRA adapter"),
        (
            [
                "generate",
                "a red circle",
                "--model",
                str(base),
                "--lora",
                str(base),
                "--out",
                str(tmp_path / "x.gif"),
            ],
            "not a LoRA adapter folder",
        ),  # fmt: skip
        (["finetune", str(tuned), "--out", str(tmp_path / "d")], "merge it into a model folder"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, (argv, err)
    pipe = Pipeline.from_pretrained(base, device="cpu").load_lora(tuned)
    with pytest.raises(InputError, match="already carries an adapter"):
        pipe.load_lora(tuned)
    enc = tmp_path / "enc"
    train(resolve_config("tiny", [*TINY, "train.steps=1", "model.backbone=encoder"]), enc,
          progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="LoRA needs the dit backbone"):
        finetune(str(enc), [*TINY, "train.steps=1"], str(tmp_path / "e"))


def test_rank_0_fine_tunes_every_weight_from_the_base(base, tmp_path):
    before = sha(base / "model.safetensors")
    run = tmp_path / "full"
    finetune(str(base), [*TINY, "train.steps=2", "lora.rank=0"], str(run))
    assert (run / "model.safetensors").is_file() and not (run / "adapter.json").exists()
    start, end = load_file(base / "model.safetensors"), load_file(run / "model.safetensors")
    assert start.keys() == end.keys() and any(not torch.equal(start[k], end[k]) for k in start)
    assert sha(base / "model.safetensors") == before


class NaNAt(ShapesWorld):
    def __getitem__(self, index: int):
        video, caption, clip = super().__getitem__(index)
        return (np.full(video.shape, np.nan, np.float32) if index == 5 else video), caption, clip


def test_the_nonfinite_guard_undoes_a_lora_step(base, tmp_path):
    cfg = resolve_config("tiny", [*TINY, *FT, "lora.rank=4", f"lora.base={base}"])
    trainer = Trainer(cfg, tmp_path, progress=False, dataset=NaNAt(frames=4, height=16, width=16))
    trainer.train_step()
    adapters = {n: p.detach().clone() for n, p in trainer.net.named_parameters() if p.requires_grad}
    assert trainer.train_step() is None and trainer.nonfinite == 1  # positions 4-7 hold clip 5
    now = dict(trainer.net.named_parameters())
    assert all(torch.equal(now[n], p) for n, p in adapters.items())
    assert trainer.train_step() is not None


def torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_rank_ddp_and_fsdp_lora_runs_match_one_process(base, tuned, tmp_path):
    one = rows(tuned)
    common = [*TINY, *FT, "lora.rank=4", f"lora.base={base}"]
    torchrun(str(WORKER), str(tmp_path / "ddp"), *common, "train.batch_size=2",
             "parallel.mode=ddp", "--bad", "")  # fmt: skip
    fsdp = ["train.batch_size=1", "train.grad_accum=2", "parallel.mode=fsdp"]
    torchrun("-m", "univid", "finetune", str(base), "--out", str(tmp_path / "fsdp"), *TINY, *FT,
             "lora.rank=4", *fsdp)  # fmt: skip
    reference = lora.read_adapter(tuned)[1]
    for mode in ("ddp", "fsdp"):
        two = rows(tmp_path / mode)
        assert [r["step"] for r in two] == [r["step"] for r in one]
        for a, b in zip(one, two):
            assert math.isclose(float(a["loss"]), float(b["loss"]), rel_tol=1e-5), (mode, a, b)
        meta, state = lora.read_adapter(tmp_path / mode)
        assert state.keys() == reference.keys()
        for k in state:
            torch.testing.assert_close(state[k], reference[k], rtol=1e-4, atol=1e-6)


def test_a_checkpoint_from_before_the_lora_section_still_resumes(base):
    ckpt = complete_checkpoints(base)[-1]
    saved = json.loads((ckpt / "config.json").read_text())
    old = {k: v for k, v in saved.items() if k != "lora"}  # as univid wrote it before
    old["data"] = {k: v for k, v in old["data"].items() if k != "novel_fraction"}
    (ckpt / "config.json").write_text(json.dumps(old))
    try:
        check_resume(ckpt, (base / "config.json").read_text(), 4)  # no error: defaults
        with pytest.raises(ConfigError, match="lora.rank 8 -> 2"):
            check_resume(ckpt, apply_overrides(load_config_file(base / "config.json"),
                                               ["lora.rank=2"]).to_json(), 4)  # fmt: skip
    finally:
        (ckpt / "config.json").write_text(json.dumps(saved))


class BadAt(ShapesWorld):
    def __getitem__(self, index: int):
        if index in (1, 6):
            raise BadSample(f"clip {index} is corrupt (planted by the test)")
        return super().__getitem__(index)


def test_a_lora_run_skips_bad_samples(base, tmp_path):
    cfg = resolve_config("tiny", [*TINY, *FT, "lora.rank=4", f"lora.base={base}"])
    trainer = Trainer(cfg, tmp_path, progress=False, dataset=BadAt(frames=4, height=16, width=16))
    trainer.run()
    assert trainer.step == 4 and trainer.skipped == 2
    assert "clip 6 is corrupt" in (tmp_path / "skipped.log").read_text()
    assert lora.read_adapter(tmp_path)[1]
