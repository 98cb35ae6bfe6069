"""Shared fixtures: the real MiniLM text encoder (loaded once) and tiny configs."""

from __future__ import annotations

import pytest
import torch

from univid.config import resolve_config


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
