"""Fine-tuning from a trained model: low-rank adapters through PEFT, applied from outside the
model (the model files know nothing of them), and the adapter files.

A fine-tuning run (config section ``lora``, ``univid finetune BASE``) starts from BASE's weights;
with ``lora.rank`` > 0 PEFT puts a LoRA adapter on the blocks' linears, freezes everything else,
and only the adapters are trained, checkpointed and exported. An adapter folder holds

    adapter.safetensors   the adapter weights, in PEFT's key layout (``...qkv.lora_A.weight``)
    adapter.json          what it adapts: base name, base weights' SHA-256, rank, alpha, targets

and loads onto a model whose weights hash the same (:func:`load_adapter`), unmerged (its scale
can change) or merged into the weights (:func:`merge_adapter`). Nothing in it is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from univid.build import BUNDLED, build_model, load_model_dir, read_safetensors, resolve_model_dir
from univid.config import Config, ModelConfig, load_config_file
from univid.errors import ConfigError, InputError
from univid.files import CONFIG_LIMIT, atomic_write, read_json, writing

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_META = "adapter.json"
FORMAT = 1
ADAPTER = "default"  # PEFT's name for the one adapter a model carries here
MARK = ".lora_"  # in the name of every adapter tensor


@contextmanager
def _quiet() -> Iterator[None]:
    """Import PEFT without the warnings its imports log that a user can do nothing about
    (torchao's CUDA-only extensions, torch's pytree)."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def target_modules(model: ModelConfig, targets: str) -> str:
    """The regular expression of the block linears that ``lora.targets`` names."""
    if model.backbone != "dit":
        raise ConfigError(
            "LoRA needs the dit backbone (the encoder's attention runs torch's fused fast path, "
            "which bypasses adapters); fine-tune all weights with lora.rank=0"
        )
    mlp = ("mlp.0", "mlp.2") if model.mlp == "gelu" else ("mlp.gate_up", "mlp.down")
    names = {"attention": ("qkv", "proj"), "mlp": mlp}
    chosen = [n for part in targets.split("+") for n in names[part]]
    return rf"blocks\.\d+\.({'|'.join(re.escape(n) for n in chosen)})"


def _peft_config(rank: int, alpha: float, modules: str) -> Any:
    with _quiet():
        from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=modules, lora_dropout=0.0)


def inject(model: nn.Module, rank: int, alpha: float, modules: str) -> nn.Module:
    """Put a fresh LoRA adapter (B = 0: the output is unchanged) on ``modules`` of ``model``,
    in place; every other weight is frozen. Returns ``model``."""
    with _quiet():
        from peft import inject_adapter_in_model

    return inject_adapter_in_model(_peft_config(rank, alpha, modules), model)


def has_adapter(model: nn.Module) -> bool:
    return any(MARK in name for name, _ in model.named_parameters())


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's base weights (names, dtypes, shapes and bytes, in name order),
    whatever file they came from; adapter tensors are left out, so a model carrying an adapter
    hashes as its base."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        if MARK in name:
            continue
        tensor = state[name].detach().cpu().contiguous()
        key = name.replace(".base_layer", "")
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def base_model(cfg: Config) -> tuple[Config, nn.Module]:
    """The base of a fine-tuning run, checked against the run's config: same network, and the
    weights it recorded (``lora.base_sha256``) when it has recorded them."""
    base_cfg, model = load_model_dir(cfg.lora.base)
    # A few-step student (univid distill) may add a step input to its teacher's network, and
    # a streaming model block-causal attention (no weights of its own).
    if base_cfg.model != replace(
        cfg.model, step_input=base_cfg.model.step_input, chunk=base_cfg.model.chunk
    ):
        raise ConfigError(
            f"lora.base {cfg.lora.base!r} is a different network from this run's model section; "
            "a fine-tuning run takes its model section from the base"
        )
    if cfg.lora.base_sha256:
        found = weights_sha256(model)
        if found != cfg.lora.base_sha256:
            raise InputError(
                f"the base model {cfg.lora.base!r} has changed since this run started (weights "
                f"sha256 {found[:12]}..., recorded {cfg.lora.base_sha256[:12]}...)"
            )
    return base_cfg, model


def record_base(cfg: Config) -> Config:
    """``cfg`` with the hash of its base's weights recorded (``lora.base_sha256``), checked
    against the one it holds; unchanged when it trains from scratch."""
    if not cfg.lora.base:
        return cfg
    _, model = base_model(cfg)  # checks the hash it records, if it has one
    if has_adapter(model):
        raise InputError(
            f"{cfg.lora.base} is a LoRA fine-tuning run; merge it into a model folder first "
            f"(univid export {cfg.lora.base} --merge-lora --out DIR) and fine-tune that"
        )
    if cfg.lora.base_sha256:
        return cfg
    return replace(cfg, lora=replace(cfg.lora, base_sha256=weights_sha256(model)))


def network(cfg: Config, meta: bool = False) -> nn.Module:
    """The network a run trains: freshly initialised, or its base's weights (``lora.base``) with
    a new adapter when ``lora.rank`` > 0. ``meta``: the structure only, on the meta device."""
    if meta:
        with torch.device("meta"):
            model = build_model(cfg.model)
    elif cfg.lora.base:
        base_cfg, model = base_model(cfg)
        if base_cfg.model != cfg.model:  # a step input or block-causal attention it lacks
            model = _with_step_input(cfg.model, model)
        model.train()
    else:
        model = build_model(cfg.model)
    if cfg.lora.base and cfg.lora.rank:
        modules = target_modules(cfg.model, cfg.lora.targets)
        inject(model, cfg.lora.rank, cfg.lora.alpha, modules)
    return model


def _with_step_input(cfg: ModelConfig, teacher: nn.Module) -> nn.Module:
    """``cfg``'s network (the teacher's plus a step input) holding the teacher's weights; the
    step embedding is new and its output starts at zero, so it computes what the teacher does."""
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or any(not k.startswith("step_embed.") for k in missing):
        raise ConfigError(f"cannot start this network from its base: {(unexpected + missing)[0]}")
    return model


def adapter_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter tensors of a model's (full) state dict, in PEFT's saved layout (without the
    adapter's name), contiguous on the CPU."""
    return {
        k.replace(f".{ADAPTER}.", "."): v.detach().cpu().contiguous()
        for k, v in state.items()
        if MARK in k
    }


def save_adapter(folder: Path, state: dict[str, torch.Tensor], cfg: Config) -> None:
    """Write ``adapter.safetensors`` and ``adapter.json`` for a run's adapter tensors (the
    layout of :func:`adapter_tensors`)."""
    lora = cfg.lora
    meta = {
        "format": FORMAT,
        "base": lora.base,
        "base_sha256": lora.base_sha256,
        "rank": lora.rank,
        "alpha": lora.alpha or lora.rank,
        "targets": lora.targets,
        "target_modules": target_modules(cfg.model, lora.targets),
        "parameters": sum(v.numel() for v in state.values()),
    }
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / ADAPTER_WEIGHTS, lambda p: save_file(state, p))
        text = json.dumps(meta, indent=1)
        atomic_write(folder / ADAPTER_META, lambda p: p.write_text(text, encoding="utf-8"))


def read_adapter(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(adapter.json, adapter tensors) of an adapter or fine-tuning run folder."""
    folder = Path(folder)
    if not (folder / ADAPTER_META).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        raise InputError(
            f"{folder} is not a LoRA adapter folder (no {ADAPTER_META} + {ADAPTER_WEIGHTS}; a "
            "fine-tuning run writes them at its first checkpoint)"
        )
    meta = read_json(folder / ADAPTER_META, CONFIG_LIMIT)
    if meta.get("format") != FORMAT:
        raise InputError(f"{folder / ADAPTER_META} has format {meta.get('format')}, not {FORMAT}")
    return meta, read_safetensors(folder / ADAPTER_WEIGHTS)


def load_adapter(model: nn.Module, folder: str | Path, scale: float = 1.0) -> dict[str, Any]:
    """Put the adapter of ``folder`` on ``model`` (in place, unmerged, at ``scale``); refuses,
    in one line, a model that is not the adapter's base. Returns adapter.json's contents."""
    meta, state = read_adapter(folder)
    if has_adapter(model):
        raise InputError("this model already carries an adapter; unload it first")
    found = weights_sha256(model)
    if found != meta["base_sha256"]:
        raise InputError(
            f"the adapter {folder} was trained on base {meta['base']!r} (weights sha256 "
            f"{meta['base_sha256'][:12]}...), not on this model (sha256 {found[:12]}...)"
        )
    inject(model, int(meta["rank"]), float(meta["alpha"]), str(meta["target_modules"]))
    with _quiet():
        from peft import set_peft_model_state_dict

    expected = adapter_tensors(model.state_dict())
    wrong = sorted(
        k for k in expected.keys() | state.keys() if k not in state or k not in expected
    ) + sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if wrong:
        unload_adapter(model)
        where = Path(folder) / ADAPTER_WEIGHTS
        raise InputError(f"{where} does not fit its {ADAPTER_META}: {wrong[0]}")
    set_peft_model_state_dict(model, state)
    set_scale(model, scale)
    return meta


def _lora_layers(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute name, PEFT LoRA layer) of every adapted linear."""
    with _quiet():
        from peft.tuners.lora import LoraLayer

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                yield parent, name, child


def set_scale(model: nn.Module, scale: float) -> None:
    """Scale the adapter's update (1 = as trained, 0 = the base)."""
    for _, _, layer in _lora_layers(model):
        layer.set_scale(ADAPTER, scale)


def merge_adapter(model: nn.Module) -> nn.Module:
    """Fold the adapter into the base weights (PEFT's merge) and drop it: plain linears again,
    the same outputs to float rounding. In place; returns ``model``."""
    for parent, name, layer in _lora_layers(model):
        layer.merge(safe_merge=True)
        setattr(parent, name, layer.get_base_layer())
    return model


def unload_adapter(model: nn.Module) -> nn.Module:
    """Drop the adapter without merging: the base model as it was. In place."""
    for parent, name, layer in _lora_layers(model):
        if layer.merged:
            layer.unmerge()
        setattr(parent, name, layer.get_base_layer())
    return model


def load_adapted(folder: Path) -> tuple[Config, nn.Module]:
    """A fine-tuning run's folder (config.json + adapter files) as a model: its base with the
    adapter on, unmerged."""
    cfg = load_config_file(folder / "config.json")
    _, model = base_model(cfg)
    load_adapter(model, folder)
    return cfg, model.eval()


def resolve_base(base: str) -> str:
    """``lora.base`` as recorded: a bundled name as it is, a folder as an absolute path (a
    resumed run may start elsewhere)."""
    return base if base in BUNDLED else str(resolve_model_dir(base).resolve())
