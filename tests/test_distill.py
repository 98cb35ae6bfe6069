"""Few-step students (``univid distill``): the average-velocity and reflow objectives, the
teacher's paths (exact, resumable, every mode), the step input, a student that beats its teacher
at one step on a toy target, bit-exact resume, and the one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from univid.build import build_model, load_model_dir
from univid.cli import main
from univid.config import apply_overrides, resolve_config
from univid.errors import ConfigError, InputError
from univid.flow import (
    Given,
    average_velocity_loss,
    euler_path,
    expand_time,
    guided,
    ode_sample,
)
from univid.pipeline import Pipeline, check_student
from univid.train import distill, train
from univid.train.paths import (
    PATHS_DIR,
    TeacherPaths,
    path_conditioning,
    shard_path,
)

QUIET = ["train.sample_every=0", "train.val_every=0", "train.device=cpu", "train.precision=fp32"]
# A teacher that knows every mode: one time per latent frame, four latent frames.
TEACHER = [
    *QUIET,
    "model.patch=1,4,4",
    "flow.mix_i2v=1",
    "flow.mix_extend=1",
    "flow.mix_interpolate=1",
    "train.steps=40",
    "train.lr=2e-3",
    "train.ckpt_every=40",
]
STUDENT = [
    *QUIET,
    "distill.paths=80",
    "distill.teacher_steps=8",
    "train.batch_size=8",
    "train.log_every=1",
    "train.ckpt_every=2",
    "train.warmup=1",
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("teacher") / "run"
    train(resolve_config("tiny", TEACHER), run, progress=False)
    return run


@pytest.fixture(scope="module")
def student(teacher, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("student") / "run"
    distill(str(teacher), [*STUDENT, "train.steps=4"], str(run), progress=False)
    return run


# --- the math ---------------------------------------------------------------------------------


def test_average_velocity_loss_is_the_error_against_the_chord():
    start = torch.full((1, 1, 2, 1, 1), 3.0)
    end = torch.full((1, 1, 2, 1, 1), 1.0)
    t0, t1 = torch.tensor([1.0]), torch.tensor([0.5])
    # The chord's slope is (3 - 1) / (1 - 0.5) = 4: a field of 4 has no error, one of 5 has 1.
    exact = average_velocity_loss(lambda x, t: torch.full_like(x, 4.0), start, end, t0, t1)
    off = average_velocity_loss(lambda x, t: torch.full_like(x, 5.0), start, end, t0, t1)
    assert exact.tolist() == [0.0] and off.tolist() == [1.0]
    # A given frame is at t = 0 and carries no loss; the model sees the step's start elsewhere.
    seen = []

    def field(x, t):
        seen.append(t)
        return torch.cat([torch.full_like(x[:, :, :1], 9.0), torch.full_like(x[:, :, 1:], 5.0)], 2)

    given = torch.tensor([[True, False]])
    loss = average_velocity_loss(field, start, end, t0, t1, given)
    assert loss.tolist() == [1.0] and seen[0].tolist() == [[0.0, 1.0]]


def test_euler_path_keeps_the_sampler_states_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 3, 4, 4, 4, generator=g)
    w = torch.randn(3, 3, generator=g)

    def field(x, t):  # any field that depends on x and t
        return torch.einsum("ij,bjthw->bithw", w, x).tanh() * (1 + expand_time(t, x))

    states = euler_path(field, noise, 8, 4)
    assert states.shape == (4, *noise.shape)
    assert torch.equal(states[-1], ode_sample(field, noise, 8))
    x = noise
    for t in (1.0, 0.875):  # two Euler steps of 1/8 reach the first kept time, 0.75
        x = x + (-0.125) * field(x, torch.full((2,), t))
    assert torch.equal(states[0], x)
    given = Given(torch.zeros_like(noise), torch.tensor([[True, False, False, True]] * 2))
    with_given = euler_path(field, noise, 8, 2, given)
    assert torch.equal(with_given[-1], ode_sample(field, noise, 8, given=given))
    assert bool((with_given[:, :, :, 0] == 0).all()) and bool((with_given[:, :, :, 3] == 0).all())
    with pytest.raises(ValueError, match="multiple"):
        euler_path(field, noise, 6, 4)


def test_a_step_input_starts_at_zero_and_then_matters(tiny_cfg):
    torch.manual_seed(0)
    plain = build_model(tiny_cfg.model).eval()
    cfg = apply_overrides(tiny_cfg, ["model.step_input=true"])
    stepped = build_model(cfg.model).eval()
    missing, unexpected = stepped.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("step_embed.") for k in missing)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 16, 16, generator=g)
    t, text = torch.rand(2, generator=g), torch.randn(2, 5, 384, generator=g)
    with torch.no_grad():
        for p in plain.parameters():  # a trained-looking model (the init zeroes the head)
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        stepped.load_state_dict(plain.state_dict(), strict=False)
        step = torch.tensor([0.5, 1.0])
        assert torch.equal(stepped(x, t, text, None, step=step), plain(x, t, text, None))
        stepped.step_embed.mlp[2].weight.normal_(generator=g)
        assert not torch.equal(stepped(x, t, text, None, step=step), plain(x, t, text, None))
        with pytest.raises(ValueError, match="no step input"):
            plain(x, t, text, None, step=step)
    with pytest.raises(ConfigError, match="model.step_input"):
        apply_overrides(tiny_cfg, ["model.backbone=encoder", "model.step_input=true"])


@pytest.mark.parametrize(
    "override, words",
    [
        ("distill.max_steps=3", "power of two"),
        ("distill.teacher_steps=10", "multiple of distill.max_steps"),
        ("distill.method=average", "lora.base=TEACHER"),
    ],
)
def test_bad_distill_settings_are_one_line(tiny_cfg, override, words):
    with pytest.raises(ConfigError, match=words):
        apply_overrides(tiny_cfg, [override])


# --- the teacher's paths ----------------------------------------------------------------------


def test_paths_cover_every_mode_and_keep_the_given_frames(teacher, student):
    cfg, _ = load_model_dir(student)
    paths = TeacherPaths(cfg, student / PATHS_DIR)
    assert len(paths) == 80 and paths.states.dtype == torch.float16
    from univid.data.shapes import ShapesWorld

    world = ShapesWorld(4, 16, 16, seed=cfg.train.seed)
    modes = set()
    for i in range(len(paths)):
        mode, caption, frames = path_conditioning(cfg, world, i, 4)
        modes.add(mode)
        item = paths[i]
        assert item.caption == caption and item.states.shape == (5, 3, 4, 16, 16)
        assert sorted(frames) == torch.nonzero(item.given).flatten().tolist()
        for f, image in frames.items():  # the given frames, in every state, as data (fp16)
            data = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
            for state in item.states:
                assert torch.allclose(state[:, f], data, atol=1e-3)
    assert modes == {"t2v", "i2v", "extend", "interpolate"}


def test_the_last_state_is_the_teachers_own_video(teacher, student):
    """Path 0 made again by the teacher's sampler gives the same states (to fp16)."""
    cfg, _ = load_model_dir(student)
    paths = TeacherPaths(cfg, student / PATHS_DIR)
    tcfg, net = load_model_dir(teacher)
    from univid.text import TextEncoder

    text = TextEncoder(tcfg.text.encoder, tcfg.text.max_length)
    emb, mask = text.encode([paths[0].caption])
    null, null_mask = text.encode([""])
    item = paths[0]
    given = Given(item.states[-1][None], item.given[None])
    field = guided(net, emb, mask, null, null_mask, cfg.distill.guidance)
    with torch.no_grad():
        again = euler_path(field, item.states[0][None], 8, 4, given)[:, 0]
    assert torch.allclose(again, item.states[1:], atol=2e-3)


def test_paths_resume_from_the_first_missing_file_and_are_the_same(teacher, student, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(student, run)
    shutil.rmtree(run / "checkpoints")
    cfg, _ = load_model_dir(student)
    kept = shard_path(run / PATHS_DIR, 0).read_bytes()
    shard_path(run / PATHS_DIR, 1).unlink()
    for p in run.iterdir():  # as if stopped while making them: only the early files
        if p.name not in ("config.json", PATHS_DIR, "metrics.csv", ".lock"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    distill(str(teacher), [*STUDENT, "train.steps=4"], str(run), progress=False)
    assert shard_path(run / PATHS_DIR, 0).read_bytes() == kept
    a = load_file(shard_path(run / PATHS_DIR, 1))
    b = load_file(shard_path(student / PATHS_DIR, 1))
    assert torch.equal(a["given"], b["given"])
    # The same paths; a value may differ by one fp16 step (1e-3 near 1) where the process's
    # earlier work changed how torch sums (it does not within one process: test_paths...same).
    assert torch.allclose(a["states"].float(), b["states"].float(), rtol=0, atol=2e-3)
    assert (
        load_file(run / "model.safetensors").keys()
        == load_file(student / "model.safetensors").keys()
    )


# --- training ---------------------------------------------------------------------------------


def rows(run: Path) -> list[dict[str, str]]:
    keys = ("step", "loss", "grad_norm", "lr", "samples")
    with (run / "metrics.csv").open() as f:
        return [{k: r[k] for k in keys} for r in csv.DictReader(f)]


def test_a_distillation_resumes_bit_for_bit(teacher, student, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(student, cut)
    shutil.rmtree(cut / "checkpoints" / "step_00000004")
    (cut / "metrics.csv").unlink()
    assert main(["distill", str(teacher), "--out", str(cut), *STUDENT, "train.steps=4"]) == 0
    assert rows(cut) == rows(student)[2:]
    assert (cut / "model.safetensors").read_bytes() == (student / "model.safetensors").read_bytes()
    # `univid train --resume` continues a distillation too, from its teacher's paths.
    assert main(["train", "--resume", str(cut), "train.steps=6"]) == 0
    assert rows(cut)[-1]["step"] == "6"


def one_step_error(pipe_model, cfg, paths, step_input: bool) -> float:
    """Mean squared distance of a one-step sample from the teacher's video, over the paths."""
    from univid.text import TextEncoder

    text = TextEncoder(cfg.text.encoder, cfg.text.max_length)
    errors = []
    with torch.no_grad():
        for i in range(len(paths)):
            item = paths[i]
            emb, mask = text.encode([item.caption])
            given = Given(item.states[-1][None], item.given[None])
            kwargs = {"step": torch.ones(1)} if step_input else {}

            def model(x, t, emb=emb, mask=mask, kwargs=kwargs):
                return pipe_model(x, t, emb, mask, **kwargs)

            field = given.field(model)
            x1 = item.states[0][None]
            one = x1 - field(x1, torch.ones(1))
            errors.append(float(((one - item.states[-1][None]) ** 2).mean()))
    return float(np.mean(errors))


@pytest.mark.parametrize("method", ["average", "reflow"])
def test_a_student_beats_its_teacher_at_one_step(teacher, tmp_path, method):
    """On a toy target (the tiny teacher's own paths), one step of the student lands nearer the
    teacher's 8-step video than one step of the teacher: the objective teaches what it should.
    A wrong target (e.g. the chord's sign flipped) leaves the student further than the teacher."""
    run = tmp_path / method
    overrides = [
        *STUDENT,
        f"distill.method={method}",
        "distill.max_steps=1",
        "distill.guidance=1",
        "train.steps=120",
        "train.lr=3e-3",
        "train.ckpt_every=120",
        "train.log_every=120",
    ]
    distill(str(teacher), overrides, str(run), progress=False)
    cfg, net = load_model_dir(run)
    paths = TeacherPaths(cfg, run / PATHS_DIR)
    tcfg, tnet = load_model_dir(teacher)
    taught = one_step_error(net, cfg, paths, method == "average")
    alone = one_step_error(tnet, tcfg, paths, False)
    # Measured: 0.62x (average) and 0.21x (reflow); with the chord's sign flipped, 1,090x.
    assert taught < 0.8 * alone, (taught, alone)


# --- using a student --------------------------------------------------------------------------


def test_a_student_samples_with_its_steps_and_no_guidance(student):
    pipe = Pipeline.from_pretrained(str(student), device="cpu")
    pipe.precision = "fp32"
    for steps in (1, 2, 4):
        video = pipe("a red ball moves left", num_steps=steps, seed=1)
        assert video.shape == (4, 16, 16, 3)
    cfg = pipe.config
    assert cfg.flow.guidance == 1 and cfg.distill.guidance == 4 and cfg.flow.sample_steps == 2
    with pytest.raises(InputError, match="samples with 1, 2, 4 steps, not 50"):
        pipe("a red ball moves left", num_steps=50)
    with pytest.raises(InputError, match="guidance 4 built in"):
        pipe("a red ball moves left", guidance_scale=4)
    with pytest.raises(InputError, match="Euler steps on an even grid"):
        pipe("a red ball moves left", solver="heun")
    reflow = apply_overrides(cfg, ["distill.method=reflow", "model.step_input=false"])
    check_student(reflow, 50, 1.0, "heun", 3.0, 0.0)  # a reflow student is a flow: any steps


def test_distill_command_errors_are_one_line(teacher, student, tmp_path, capsys):
    cached = tmp_path / "cached"  # a teacher trained on a cache (its paths need its captions)
    cached.mkdir()
    shutil.copy(teacher / "model.safetensors", cached)
    config = json.loads((teacher / "config.json").read_text())
    config["data"]["cache"] = str(tmp_path / "some-cache")
    (cached / "config.json").write_text(json.dumps(config))
    cases = [
        (["distill", str(cached), "--out", str(tmp_path / "e")], "trained on a cache"),
        (["distill", str(student), "--out", str(tmp_path / "a")], "itself a few-step student"),
        (["distill", str(teacher), "--out", str(tmp_path / "b"), "model.width=64"], "TEACHER"),
        (["distill", str(teacher), "--out", str(tmp_path / "c"), "distill.method=mean"], "allowed"),
        (["distill", "nowhere", "--out", str(tmp_path / "d")], "not found"),
        (
            [
                "generate",
                "a red ball moves left",
                "--model",
                str(student),
                "--steps",
                "3",
                "--out",
                str(tmp_path / "x.gif"),
            ],
            "not 3",
        ),
    ]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err


def test_few_steps_without_a_model_use_the_bundled_student(tmp_path, capsys):
    from univid.pipeline import default_model

    assert default_model(2, False)[0] == "shapes-tiny-fast"
    assert default_model(1, False)[0] == "shapes-tiny-fast"
    assert default_model(3, False) == ("shapes-tiny", None)  # not one of the student's counts
    assert default_model(25, False) == ("shapes-tiny", None)
    assert default_model(None, False) == ("shapes-tiny", None)
    assert default_model(2, True) == ("shapes-tiny", None)  # guidance, solver, ...: the teacher
    cfg, _ = load_model_dir("shapes-tiny-fast")
    teacher_cfg, _ = load_model_dir("shapes-tiny")
    assert cfg.lora.base == "shapes-tiny" and cfg.distill.method
    assert cfg.model == apply_overrides(teacher_cfg, ["model.step_input=true"]).model
    out = tmp_path / "v.npy"
    argv = ["generate", "a red ball moves left", "--steps", "2", "--out", str(out)]
    assert main([*argv, "--precision", "fp32"]) == 0
    assert "shapes-tiny-fast" in capsys.readouterr().err
    fast = np.load(out)
    assert main([*argv, "--precision", "fp32", "--model", "shapes-tiny-fast"]) == 0
    assert np.array_equal(np.load(out), fast)
    assert main(["info", "--model", "shapes-tiny-fast"]) == 0  # a bundled model without a preset
    assert "2.96 M" in capsys.readouterr().out
