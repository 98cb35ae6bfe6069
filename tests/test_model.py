import ast
from pathlib import Path

import pytest
import torch

import univid
from univid.build import build_model
from univid.config import ModelConfig
from univid.model.embed import velocity_from_data


def tiny_model(**kw) -> torch.nn.Module:
    kw.setdefault("backbone", "encoder")
    return build_model(ModelConfig(width=32, depth=2, heads=2, text_dim=16, **kw))


@pytest.mark.parametrize("time_mode", ["token", "token+add"])
def test_output_shape_and_zero_init(time_mode):
    torch.manual_seed(0)
    model = tiny_model(time_mode=time_mode)
    x = torch.randn(2, 3, 4, 8, 8)
    text, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    v = model(x, torch.rand(2), text, mask)
    assert v.shape == x.shape
    # The zero-initialised head makes the first prediction exactly zero.
    assert torch.count_nonzero(v) == 0


def randomise_zero_inits(model):
    """Random values for what starts at zero: the head, and the dit's modulations and offsets."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modulation" in name or "offset" in name or name.startswith("head"):
                p.normal_(std=0.2)
    return model.eval()


BACKBONES = [{"time_mode": "token"}, {"time_mode": "token+add"}, {"backbone": "dit"}]
BACKBONES += [{"backbone": "dit", "adaln": "shared"}]


@pytest.mark.parametrize("kw", BACKBONES)
def test_text_padding_is_ignored(kw):
    torch.manual_seed(0)
    model = randomise_zero_inits(tiny_model(**kw))
    x, t = torch.randn(1, 3, 4, 8, 8), torch.rand(1)
    text, mask = torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.bool)
    padded = torch.cat([text, torch.randn(1, 4, 16) * 100], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 4, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(x, t, text, mask), model(x, t, padded, padded_mask), atol=1e-5)


@pytest.mark.parametrize("kw", BACKBONES)
def test_text_time_and_position_change_the_output(kw):
    torch.manual_seed(0)
    model = randomise_zero_inits(tiny_model(**kw))
    x, t = torch.randn(1, 3, 4, 8, 8), torch.tensor([0.5])
    text, mask = torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        base = model(x, t, text, mask)
        assert not torch.allclose(base, model(x, t, torch.randn(1, 3, 16), mask))
        assert not torch.allclose(base, model(x, torch.tensor([0.9]), text, mask))
        # Joint attention: changing one frame changes the prediction for another frame.
        other = x.clone()
        other[:, :, 2:] = torch.randn_like(other[:, :, 2:])
        assert not torch.allclose(base[:, :, :2], model(other, t, text, mask)[:, :, :2])


def test_model_and_flow_import_only_torch():
    root = Path(univid.__file__).parent
    for package in ("model", "flow"):
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                for name in names:
                    top = name.split(".")[0]
                    inside = name.startswith(f"univid.{package}")
                    assert (
                        top in ("torch", "__future__", "math", "collections", "dataclasses")
                        or inside
                    ), f"{path.name} imports {name}"


def test_data_prediction_returns_the_path_velocity():
    from univid.flow import sample_path

    torch.manual_seed(0)
    model = tiny_model(prediction="data")
    x_data, noise = torch.randn(3, 3, 4, 8, 8), torch.randn(3, 3, 4, 8, 8)
    t = torch.tensor([0.05, 0.5, 1.0])
    x_t, v = sample_path(x_data, noise, t)
    # A perfect clean-video prediction gives exactly the path velocity noise - x_data.
    assert torch.allclose(velocity_from_data(x_t, t, x_data, model.min_time), v, atol=1e-5)
    # At initialisation the head predicts a zero video, so v = x_t / t.
    text, mask = torch.randn(3, 2, 16), torch.ones(3, 2, dtype=torch.bool)
    out = model(x_t, t, text, mask)
    assert torch.allclose(out, x_t / t.reshape(-1, 1, 1, 1, 1), atol=1e-6)
