"""Smoke tests of the command line, in-process, on a tiny model trained for a few steps."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from univid.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "tiny", "--out", str(out), "train.steps=4", "train.ckpt_every=2"]) == 0
    return out


def test_train_writes_a_usable_run(run_dir):
    assert (run_dir / "model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "step_00000004" / "COMPLETE").is_file()
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 2  # log_every=5 -> only the last step
    assert main(["train", "--resume", str(run_dir), "train.steps=6"]) == 0
    assert (run_dir / "checkpoints" / "step_00000006" / "COMPLETE").is_file()


@pytest.mark.parametrize("suffix", [".gif", ".png", ".npy", ".mp4"])
def test_generate_every_format(run_dir, tmp_path, suffix):
    out = tmp_path / f"video{suffix}"
    assert (
        main(["generate", "a red circle moving right", "--out", str(out), "--model", str(run_dir)])
        == 0
    )
    assert out.stat().st_size > 0
    if suffix == ".npy":
        video = np.load(out)
        assert video.shape == (4, 16, 16, 3) and video.dtype == np.uint8
    if suffix == ".png":
        assert Image.open(out).size == (4 * 16, 16)


def test_generate_is_deterministic_and_num_makes_several(run_dir, tmp_path):
    args = ["generate", "blue box", "--model", str(run_dir), "--seed", "3"]
    main([*args, "--out", str(tmp_path / "a.npy")])
    main([*args, "--out", str(tmp_path / "b.npy")])
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    main([*args, "--out", str(tmp_path / "c.npy"), "--num", "2", "--seed", "2"])
    # Video k of --num uses seed + k: c-1 is seed 3, the same as a.
    assert np.array_equal(np.load(tmp_path / "c-1.npy"), np.load(tmp_path / "a.npy"))
    assert not np.array_equal(np.load(tmp_path / "c-0.npy"), np.load(tmp_path / "a.npy"))


def test_eval_writes_report_and_grid(run_dir, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["eval", "--model", str(run_dir), "--seeds", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["num_videos"] == 84 and len(report["items"]) == 84
    assert 0 <= report["accuracy"]["all_three"] <= 1
    assert Image.open(out.with_suffix(".png")).size[0] > 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["report"] == str(out)
    # The fixed validation loss is part of the report and reproducible.
    assert len(report["validation"]["per_t"]) == 8
    assert printed["val_loss"] == report["validation"]["val_loss"] > 0
    main(["eval", "--model", str(run_dir), "--seeds", "1", "--out", str(tmp_path / "b.json")])
    again = json.loads((tmp_path / "b.json").read_text())["validation"]
    assert again == report["validation"]


@pytest.mark.parametrize("variant", ["model.backbone=encoder", "model.adaln=shared"])
def test_other_backbones_train_validate_generate_and_evaluate(tmp_path, variant):
    """The default (dit, per-block adaLN) is the run_dir fixture; these are the others."""
    run = tmp_path / "run"
    argv = ["train", "tiny", variant, "train.steps=4", "train.val_every=2", "--out", str(run)]
    assert main(argv) == 0
    key, value = variant.removeprefix("model.").split("=")
    assert json.loads((run / "config.json").read_text())["model"][key] == value
    rows = (run / "metrics.csv").read_text().splitlines()
    header, values = rows[0].split(","), [r.split(",") for r in rows[1:]]
    assert [v[0] for v in values] == ["2", "4"]  # validation steps are logged rows
    assert all(float(v[header.index("val_loss_ema")]) > 0 for v in values)
    video = tmp_path / "v.npy"
    assert main(["generate", "a red circle", "--model", str(run), "--out", str(video)]) == 0
    assert np.load(video).shape == (4, 16, 16, 3)
    assert (
        main(["eval", "--model", str(run), "--seeds", "1", "--out", str(tmp_path / "e.json")]) == 0
    )


def test_info_counts_parameters_and_flops(capsys):
    assert main(["info", "--model", "S", "model.backbone=dit", "--text-len", "16", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["width"] == 384 and info["depth"] == 12 and info["tokens"] == 256 + 16
    assert abs(info["forward_flops"] / info["closed_form_flops"] - 1) < 0.05
    assert main(["info", "--model", "shapes-tiny"]) == 0
    assert "GFLOP" in capsys.readouterr().out
    assert main(["info", "--model", "tiny", "--height", "6"]) == 2
    assert "multiple of the patch" in capsys.readouterr().err


def test_export_half_precision(run_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--out", str(out), "--dtype", "float16"]) == 0
    weights = load_file(out / "model.safetensors")
    assert all(w.dtype == torch.float16 for w in weights.values())
    assert (
        main(["generate", "a red circle", "--out", str(tmp_path / "v.npy"), "--model", str(out)])
        == 0
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "tiny", "--out", "{tmp}/r", "model.widht=3"],
            "unknown config key 'model.widht'",
        ),
        (["train", "tiny", "--out", "{tmp}/r", "data.frames=3"], "divisible by the patch size"),
        (
            ["generate", "a red circle", "--out", "{tmp}/v.gif", "--model", "{tmp}/nope"],
            "not found",
        ),
        (["generate", "a red circle", "--out", "{tmp}/no/dir/v.gif"], "does not exist"),
        (["generate", "   ", "--out", "{tmp}/v.gif"], "prompt is empty"),
        (["generate", "a\x07bell", "--out", "{tmp}/v.gif"], "control characters"),
        (["generate", "a red circle", "--out", "{tmp}/v.txt"], "must end in one of"),
        (["train", "--resume", "{tmp}"], "not a training run"),
        (["generate", "a red circle", "--out", "{tmp}"], "must end in one of"),
        (["generate", "a red circle", "--out", "{tmp}/dir.gif"], "cannot write"),
        (["generate", "bad \udcff bytes", "--out", "{tmp}/v.gif"], "not valid UTF-8"),
        (["generate", "x" * 10_000, "--out", "{tmp}/v.gif"], "at most 2000"),
        (["train", "tiny", "--out", "{tmp}/file.txt"], "is a file, not a folder"),
        (["eval", "--out", "{tmp}/no/dir/r.json"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "dir.gif").mkdir()  # a folder where the video should go: unwritable
    (tmp_path / "file.txt").write_text("not a folder")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["generate", "a red circle", "--out", str(locked / "v.gif")]) == 2
    assert "permission denied" in capsys.readouterr().err
