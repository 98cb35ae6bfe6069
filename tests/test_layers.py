"""The layering of the code as a test: every import points down (or sideways within a layer).

    model, flow (import only torch)  <-  build, lora  <-  speed, parallel  <-  data, pipeline
        <-  train, eval, demo  <-  cli

The core modules (errors, files, config, device, text, autoencoder, video, stream_out) sit beside
model and flow at the bottom; imports inside functions count like the others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import univid

LAYERS = {
    "errors": 0,
    "limits": 0,
    "files": 0,
    "config": 0,
    "device": 0,
    "text": 0,
    "autoencoder": 0,
    "video": 0,
    "stream_out": 0,
    "model": 0,
    "flow": 0,
    "build": 1,
    "lora": 1,
    "speed": 2,
    "step_cache": 2,
    "stream": 2,
    "parallel": 2,
    "info": 2,
    "memory": 2,
    "data": 3,
    "given": 3,
    "pipeline": 3,
    "train": 4,
    "eval": 4,
    "bench": 4,
    "demo": 4,
    "cli": 5,
    "cli_options": 5,
    "__main__": 6,
}
ROOT = Path(univid.__file__).parent


def imports(path: Path) -> list[str]:
    """Every univid unit (top-level module or package) that ``path`` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module]
            if node.module == "univid":
                found += [f"univid.{a.name}" for a in node.names]
    return [name.split(".")[1] for name in found if name.startswith("univid.")]


def unit_of(path: Path) -> str:
    return path.relative_to(ROOT).with_suffix("").parts[0]


def test_every_module_has_a_layer():
    units = {unit_of(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    assert units <= set(LAYERS), sorted(units - set(LAYERS))


def test_imports_point_down():
    wrong = []
    for path in ROOT.rglob("*.py"):
        unit = unit_of(path)
        if unit == "__init__":  # the package root re-exports Pipeline lazily
            continue
        for target in imports(path):
            if target != unit and LAYERS[target] > LAYERS[unit]:
                wrong.append(f"{path.relative_to(ROOT)} ({unit}) imports {target}")
    assert not wrong, wrong


def test_the_layering_test_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from univid.train.loop import Trainer\n")
    assert imports(bad) == ["train"] and LAYERS["train"] > LAYERS["pipeline"]
