"""Loading never unpickles: weights come from safetensors, configs and state from JSON/YAML."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from univid.build import load_model_dir, read_safetensors
from univid.cli import main
from univid.config import resolve_config
from univid.errors import CorruptFileError, InputError, UnividError
from univid.pipeline import Pipeline
from univid.text.encoder import resolve_encoder_path
from univid.train import train


class CreatesFile:
    """Unpickling this opens (creates) ``path``: proof that a loader ran pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("safe") / "run"
    overrides = ["train.steps=2", "train.ckpt_every=2", "train.val_every=0", "train.device=cpu"]
    train(resolve_config("tiny", overrides), run, progress=False)
    return run


def test_the_payload_really_creates_its_file(tmp_path):
    pickle.loads(pickle.dumps(CreatesFile(tmp_path / "proof")))
    assert (tmp_path / "proof").exists()


def test_a_planted_pickle_is_refused_on_every_load_path(tmp_path, run_dir):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(CreatesFile(marker))

    def plant(path: Path) -> None:
        path.write_bytes(payload)

    model = tmp_path / "model"  # a model folder whose weights are the pickle
    model.mkdir()
    shutil.copy(run_dir / "config.json", model / "config.json")
    plant(model / "model.safetensors")
    torch_files = tmp_path / "torch_files"  # only PyTorch pickles, as other tools write them
    torch_files.mkdir()
    shutil.copy(run_dir / "config.json", torch_files / "config.json")
    for name in ("pytorch_model.bin", "model.pt", "model.ckpt"):
        plant(torch_files / name)
    plant(tmp_path / "model.pt")

    def checkpoint_copy(name: str, part: str) -> Path:
        run = tmp_path / name
        shutil.copytree(run_dir, run)
        step = run / "checkpoints" / "step_00000002"
        target = next((step / "state").glob("*.safetensors")) if part == "state" else step / part
        plant(target)
        return run

    encoder = tmp_path / "encoder"  # a text encoder folder with pickled weights only
    shutil.copytree(resolve_encoder_path("minilm"), encoder)
    (encoder / "model.safetensors").unlink()
    plant(encoder / "pytorch_model.bin")

    out = str(tmp_path / "video.gif")
    commands = [
        ["generate", "a red circle moving right", "--model", str(model), "--out", out],
        ["generate", "a red circle moving right", "--model", str(torch_files), "--out", out],
        ["generate", "a red circle", "--model", str(tmp_path / "model.pt"), "--out", out],
        ["export", str(model), "--out", str(tmp_path / "exported")],
        ["train", "--resume", str(checkpoint_copy("state", "state"))],
        ["train", "--resume", str(checkpoint_copy("meta", "trainer.json"))],
        ["train", "--resume", str(checkpoint_copy("rng", "rng/rank_0.json"))],
        ["train", "tiny", "--out", str(tmp_path / "enc"), f"text.encoder={encoder}"],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        assert not marker.exists(), argv
    for source in (model, torch_files, tmp_path / "model.pt"):
        with pytest.raises(InputError):
            Pipeline.from_pretrained(source)
        assert not marker.exists()


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    "damage",
    ["truncated", "header larger than file", "offsets past the end", "unknown dtype", "pickle"],
)
def test_a_corrupt_safetensors_file_is_a_typed_error(tmp_path, damage):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(4, 4)}, path)
    good = path.read_bytes()
    data = bytes(64)
    damaged = {
        "truncated": good[: len(good) - 9],
        "header larger than file": struct.pack("<Q", 10**12) + good[8:],
        "offsets past the end": safetensors_bytes(
            {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 6400]}}, data
        ),
        "unknown dtype": safetensors_bytes(
            {"w": {"dtype": "Q7", "shape": [4, 4], "data_offsets": [0, 64]}}, data
        ),
        "pickle": pickle.dumps({"w": torch.ones(4, 4)}),
    }[damage]
    path.write_bytes(damaged)
    with pytest.raises(CorruptFileError, match="cannot read .* as safetensors"):
        read_safetensors(path)


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"{not json", b"[1, 2]"])
def test_a_bad_config_json_in_a_model_folder_is_a_clear_error(tmp_path, run_dir, content):
    folder = tmp_path / "model"
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("checkpoints"))
    (folder / "config.json").write_bytes(content)
    with pytest.raises(UnividError, match="config"):
        load_model_dir(folder)
