"""Typed configuration: model / text / flow / data / train / parallel sections, presets and
overrides.

One override path: ``section.key=value`` strings (the CLI passes them through unchanged).
Every invalid value fails at load with a :class:`ConfigError` that names the key and what is
allowed. ``sections.py`` holds the dataclasses and their checks, ``load.py`` how configs are
built from files, presets and overrides.
"""

from dataclasses import replace

from univid.config.load import (
    PRESETS,
    SIZES,
    apply_overrides,
    config_from_dict,
    load_config_file,
    resolve_config,
)
from univid.config.sections import (
    CHOICES,
    SECTIONS,
    Config,
    DataConfig,
    DistillConfig,
    FlowConfig,
    LoraConfig,
    ModelConfig,
    ParallelConfig,
    StreamConfig,
    TextConfig,
    TrainConfig,
    choices,
    validate,
)

__all__ = [
    "Config",
    "ModelConfig",
    "TextConfig",
    "FlowConfig",
    "DataConfig",
    "TrainConfig",
    "ParallelConfig",
    "DistillConfig",
    "StreamConfig",
    "LoraConfig",
    "PRESETS",
    "SIZES",
    "apply_overrides",
    "config_from_dict",
    "load_config_file",
    "resolve_config",
    "replace",
    "CHOICES",
    "SECTIONS",
    "choices",
    "validate",
]
