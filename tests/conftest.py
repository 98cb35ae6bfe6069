"""Shared fixtures: the real MiniLM text encoder (loaded once) and tiny configs; the hypothesis
profile (``HYPOTHESIS_PROFILE=ci`` in .ci/run)."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from univid.config import resolve_config

# CI draws the same examples on every run (a red CI run is then a real regression, and can be
# replayed); a developer's run explores new ones, and keeps the failures it finds in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# precision=auto picks bf16 on a CPU with bf16 matrix units (univid.device.bf16_units). The
# suite runs as on a CPU without them, in this process and the ones it starts, so that its exact
# comparisons hold on every host; the tests of the bf16 path set the flags they need.
os.environ["UNIVID_CPU_FLAGS"] = "none"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def text_encoder():
    from univid.text import TextEncoder

    return TextEncoder()


@pytest.fixture
def tiny_cfg():
    return resolve_config("tiny")
