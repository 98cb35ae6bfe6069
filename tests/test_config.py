import json

import pytest

from univid.config import (
    PRESETS,
    Config,
    apply_overrides,
    config_from_dict,
    load_config_file,
    resolve_config,
)
from univid.errors import ConfigError


def test_presets_build_and_round_trip_through_json():
    for name in PRESETS:
        cfg = resolve_config(name)
        assert config_from_dict(json.loads(cfg.to_json())) == cfg


def test_overrides_are_typed():
    cfg = apply_overrides(Config(), ["model.patch=1,2,2", "train.lr=0.01", "model.depth=3"])
    assert cfg.model.patch == (1, 2, 2)
    assert cfg.train.lr == 0.01
    assert cfg.model.depth == 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.widht=3", "did you mean 'width'"),
        ("modle.width=3", "did you mean 'model'"),
        ("model.width=abc", "expected int"),
        ("model.width=-4", "model.width"),
        ("data.frames=5", "divisible by the patch size 2"),
        ("model.heads=5", "must divide model.width"),
        ("train.precision=fp8", "allowed: auto, fp32, bf16"),
        ("data.caption_dropout=1.5", "data.caption_dropout"),
        ("nonsense", "section.key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


def test_config_files(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  depth: 3\ntrain:\n  steps: 7\n")
    cfg = load_config_file(path)
    assert (cfg.model.depth, cfg.train.steps) == (3, 7)
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {"stepz": 1}}')
    with pytest.raises(ConfigError, match="train.stepz"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="neither a preset"):
        resolve_config("no-such-preset")
