"""Building configs: from dicts, JSON/YAML files, named presets and ``section.key=value``
overrides (the one override path; the CLI passes them through unchanged)."""

from __future__ import annotations

import difflib
import json
import math
import types
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

from univid.config.sections import (
    SECTIONS,
    Config,
    DataConfig,
    FlowConfig,
    ModelConfig,
    TrainConfig,
    clip,
    show_value,
)
from univid.errors import ConfigError
from univid.files import CONFIG_LIMIT, UnreadableFile, read_user_bytes


def _suggest(name: str, options: Iterable[str]) -> str:
    if len(name) > 100:
        return ""
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Turn ``value`` (from JSON, YAML or a CLI string) into the field type ``hint``."""
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={show_value(value)} is invalid: expected true or false")
    if hint in (int, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            number = hint(value) if hint is float else int(str(value), 0)
            if not math.isfinite(number):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            expected = "a finite float" if hint is float else "int"
            raise ConfigError(
                f"{key}={show_value(value)} is invalid: expected {expected}"
            ) from None
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={show_value(value)} is invalid: expected a string")
        return value
    # tuple[int, int, int]
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or len(items) != 3:
        raise ConfigError(
            f"{key}={show_value(value)} is invalid: expected three integers like 2,4,4"
        )
    return tuple(_coerce(key, v, int) for v in items)


def _section_from_dict(name: str, cls: type, values: dict[str, Any]) -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(
                f"config keys must be strings, got {show_value(key)} in section {name!r}"
            )
        if key not in names:
            raise ConfigError(
                f"unknown config key {show_value(name + '.' + key)}{_suggest(key, names)}"
            )
        hint = hints[key]
        if isinstance(hint, types.GenericAlias):
            hint = tuple
        kwargs[key] = _coerce(f"{name}.{key}", value, hint)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a validated :class:`Config` from nested dicts (missing keys take defaults)."""
    if not isinstance(values, dict):
        raise ConfigError("a config must be a mapping of sections")
    sections = {}
    for name, section in values.items():
        if not isinstance(name, str):
            raise ConfigError(f"config section names must be strings, got {show_value(name)}")
        if name not in SECTIONS:
            raise ConfigError(
                f"unknown config section {show_value(name)}{_suggest(name, SECTIONS)}"
            )
        if not isinstance(section, dict):
            raise ConfigError(f"config section {name!r} must be a mapping")
        sections[name] = _section_from_dict(name, SECTIONS[name], section)
    return Config(**sections)


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Apply ``section.key=value`` strings to ``cfg``."""
    values = cfg.to_dict()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {show_value(item)} must look like section.key=value")
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown config section {show_value(section)}{_suggest(section, SECTIONS)}"
            )
        values[section][name] = value
    return config_from_dict(values)


# Deepest nesting a config file may have (a univid config has 3 levels: section, key, list).
MAX_DEPTH = 32


def _yaml_loader() -> type:
    """A safe YAML loader (plain data only, no Python objects from tags) that also refuses
    anchors and aliases (a univid config never needs them; an alias bomb expands a few hundred
    bytes into gigabytes) and nesting deeper than :data:`MAX_DEPTH`. Pure Python, not libyaml:
    only its composer can be checked this way, and a config file is small."""
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    "anchors and aliases (&name, *name) are not allowed",
                    event.start_mark,
                )
            if self.depth >= MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
                )
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return ConfigLoader


def _parse(path: Path, text: str) -> Any:
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a safe loader)
        except yaml.YAMLError as exc:
            first = " ".join(str(exc).split())
            raise ConfigError(f"config file {path} is not valid YAML: {clip(first, 200)}") from None
        except ValueError as exc:  # an int of 5000 digits
            raise ConfigError(
                f"config file {path} has a bad value: {clip(str(exc), 200)}"
            ) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an int of 5000 digits
        raise ConfigError(f"config file {path} is not valid JSON: {clip(str(exc), 200)}") from None


def load_config_file(path: str | Path) -> Config:
    """Read a JSON or YAML config file (a regular file of at most :data:`CONFIG_LIMIT` bytes)."""
    path = Path(path)
    try:
        text = read_user_bytes(path, CONFIG_LIMIT, "config file").decode("utf-8-sig")
    except UnreadableFile as exc:
        raise ConfigError(str(exc)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    values = _parse(path, text)
    if values is None:  # an empty YAML file (or only comments): every default
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections, not {type(values).__name__}"
        )
    return config_from_dict(values)


# --------------------------------------------------------------------------------------------
# Presets: named starting points. `shapes-tiny` is the bundled model's recipe.


# DiT's model sizes (Peebles & Xie 2023): (width, depth, heads); `tiny` is the test size.
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (32, 2, 2),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}


def preset_shapes_tiny() -> Config:
    # The bundled model's recipe. The backbone won the ablation in docs/ablations.md: dit with
    # adaLN-Zero, 4 layers with MLP ratio 3.4, the parameter count of the 6-layer encoder it
    # replaced. A patch of (1, 8, 8) gives every frame its own time, so one frame can be given
    # (image to video), with as many tokens (8 x 4 x 4) and as wide a patch (192 values) as the
    # (4, 4, 4) of the text-to-video-only model before it: the same cost per step (issue 15's
    # measurement is in docs/conditioning.md). The patch is as wide as the model, so the head
    # predicts the clean video (see model.embed.velocity_from_data), and training time leans
    # towards the noise end, where the layout of the video is decided. The mix trains every
    # conditioning mode; text to video keeps the largest share.
    return Config(
        model=ModelConfig(
            backbone="dit",
            adaln="block",
            width=192,
            depth=4,
            heads=6,
            mlp_ratio=3.4,
            patch=(1, 8, 8),
            prediction="data",
        ),
        flow=FlowConfig(
            logit_mean=0.8,
            logit_std=0.8,
            mix_t2v=0.45,
            mix_per_frame=0.05,
            mix_i2v=0.2,
            mix_extend=0.15,
            mix_interpolate=0.15,
        ),
        train=TrainConfig(
            steps=6000,
            batch_size=32,
            lr=1e-3,
            warmup=200,
            ckpt_every=500,
            sample_every=1000,
            val_every=500,
        ),
    )


def preset_tiny() -> Config:
    """A very small model for tests and smoke runs (seconds on a laptop)."""
    width, depth, heads = SIZES["tiny"]
    return Config(
        model=ModelConfig(width=width, depth=depth, heads=heads),
        data=DataConfig(frames=4, height=16, width=16),
        flow=FlowConfig(sample_steps=4),
        train=TrainConfig(
            steps=20, batch_size=4, warmup=5, log_every=5, sample_every=0, ckpt_every=10
        ),
    )


def preset_size(name: str) -> Callable[[], Config]:
    """A preset of size ``name`` with the default backbone and every other default."""
    width, depth, heads = SIZES[name]
    return lambda: Config(model=ModelConfig(width=width, depth=depth, heads=heads))


PRESETS: dict[str, Callable[[], Config]] = {
    "shapes-tiny": preset_shapes_tiny,
    "tiny": preset_tiny,
    **{name: preset_size(name) for name in SIZES if name != "tiny"},
}


def resolve_config(name_or_path: str, overrides: Iterable[str] = ()) -> Config:
    """A preset name or a config file, then overrides."""
    if name_or_path in PRESETS:
        cfg = PRESETS[name_or_path]()
    elif Path(name_or_path).suffix in (".json", ".yaml", ".yml"):
        cfg = load_config_file(name_or_path)
    else:
        raise ConfigError(
            f"{show_value(name_or_path)} is neither a preset ({', '.join(PRESETS)}) "
            "nor a .json/.yaml config file"
        )
    return apply_overrides(cfg, overrides)
