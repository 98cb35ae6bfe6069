"""Config -> network. Lives outside model/ so the model files import only torch."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from univid.config import Config, ModelConfig, load_config_file
from univid.errors import CorruptFileError, InputError
from univid.files import atomic_write, writing
from univid.model import DiTStream, EncoderStream

WEIGHTS_DIR = Path(__file__).parent / "weights"
BUNDLED = ("shapes-tiny", "shapes-tiny-fast", "shapes-long")
DEFAULT_MODEL = BUNDLED[0]
# The bundled streaming model (block-causal, any length): `univid generate --frames N` uses it
# when no model is named.
STREAMING_MODEL = "shapes-long"
# The bundled few-step student of a bundled teacher (``univid distill``): what `univid generate`
# uses when asked for few steps and no model.
FEW_STEP_STUDENT = {"shapes-tiny": "shapes-tiny-fast"}


def build_model(cfg: ModelConfig) -> nn.Module:
    """The backbone named by ``cfg.backbone``, freshly initialised."""
    common = dict(
        in_channels=cfg.in_channels,
        patch=cfg.patch,
        width=cfg.width,
        depth=cfg.depth,
        heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
        text_dim=cfg.text_dim,
        time_freq_dim=cfg.time_freq_dim,
        prediction=cfg.prediction,
    )
    if cfg.backbone == "encoder":
        return EncoderStream(**common, time_mode=cfg.time_mode)
    if cfg.backbone == "dit":
        return DiTStream(
            **common,
            adaln=cfg.adaln,
            mlp=cfg.mlp,
            qk_norm=cfg.qk_norm,
            step_input=cfg.step_input,
            chunk=cfg.chunk,
        )
    raise InputError(f"unknown backbone '{cfg.backbone}'")


def resolve_model_dir(name_or_dir: str | Path) -> Path:
    """A bundled model name ('shapes-tiny') or a folder with config.json + model.safetensors."""
    if str(name_or_dir) in BUNDLED:
        return WEIGHTS_DIR / str(name_or_dir)
    path = Path(name_or_dir)
    if not path.is_dir():
        raise InputError(
            f"model '{name_or_dir}' not found: not a bundled model ({', '.join(BUNDLED)}) "
            "nor an existing folder"
        )
    return path


def load_model_dir(name_or_dir: str | Path) -> tuple[Config, nn.Module]:
    """Config and weights of a model folder (a training run's folder works too)."""
    path = resolve_model_dir(name_or_dir)
    config_path, weights_path = path / "config.json", path / "model.safetensors"
    if not weights_path.exists() and (path / "adapter.json").is_file():
        from univid.lora import load_adapted  # a fine-tuning run: its base + its adapter

        return load_adapted(path)
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise InputError(f"model folder {path} has no {needed.name}")
    cfg = load_config_file(config_path)
    state = read_safetensors(weights_path)
    check_finite(state, weights_path)
    # The config's shapes are checked on the meta device first: a config.json that names a
    # huge model never allocates it unless the weights file holds its weights.
    with torch.device("meta"):
        check_state(build_model(cfg.model), state, weights_path)
    model = build_model(cfg.model)
    load_state_strict(model, state, weights_path)
    return cfg, model.eval()


def check_finite(state: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse weights with a NaN or an infinity (they make every video black): one pass over
    the tensors, about as fast as reading them."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CorruptFileError(f"weights in {source} are not finite (first: {name})")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a damaged file is a :class:`CorruptFileError`, never a
    crash. Nothing else is ever read as weights: no pickle, no ``torch.load``."""
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise CorruptFileError(f"cannot read {path} as safetensors: {exc}") from None


def check_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Fail with one clear line when the weights do not fit the configured model."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        first = (missing + unexpected + wrong)[0]
        raise InputError(
            f"weights in {source} do not match its config: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} wrong-shaped tensors (first: {first})"
        )


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load weights, failing with one clear line when they do not fit the configured model."""
    check_state(model, state, source)
    model.load_state_dict(state)


def export_model_dir(
    name_or_dir: str | Path,
    out_dir: str | Path,
    dtype: torch.dtype = torch.float32,
    merge: tuple[str | None, float] | None = None,
) -> Path:
    """Copy a model (e.g. a run's EMA weights) to a plain model folder, optionally in fp16; a
    LoRA fine-tuning run to an adapter folder (adapter files + config.json).

    ``merge`` = (adapter folder or None, scale) folds a LoRA adapter into the weights: the
    given folder's onto the model, or (None) the adapter of a LoRA fine-tuning run. Each file
    is written under a temporary name and renamed; a full disk is one line."""
    from univid import lora

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    cfg, model = load_model_dir(name_or_dir)
    adapter_only = merge is None and lora.has_adapter(model)  # a LoRA run: its adapter folder
    if merge is not None:
        folder, scale = merge
        if folder is not None:
            lora.load_adapter(model, folder, scale)
        elif not lora.has_adapter(model):
            raise InputError(f"{name_or_dir} has no LoRA adapter to merge: give --lora DIR")
        lora.set_scale(model, scale)
        lora.merge_adapter(model)
    state = model.state_dict()
    state = lora.adapter_tensors(state) if adapter_only else state
    state = {k: v.detach().to(dtype).contiguous() for k, v in state.items()}
    try:
        with writing(out):
            out.mkdir(parents=True, exist_ok=True)
            if adapter_only:
                lora.save_adapter(out, state, cfg)
            else:
                atomic_write(out / "model.safetensors", lambda tmp: save_file(state, tmp))
            atomic_write(
                out / "config.json", lambda tmp: tmp.write_text(cfg.to_json(), encoding="utf-8")
            )
    except OSError as exc:
        raise InputError(f"cannot write {exc.filename or out}: {exc.strerror}") from None
    return out
