"""Pretrained diffusers VAEs from a local folder: Wan, LTX-Video, CogVideoX, HunyuanVideo video
VAEs and the image ``AutoencoderKL`` (applied frame by frame).

Each family's compression ratios come from its configuration and its latents are normalised the
way the matching diffusers pipeline does it, so a model trained here sees the same latent scale
as the published pipelines:

* latents_mean and latents_std known (Wan: config lists, LTX: buffers of the model, SDXL-style
  ``AutoencoderKL``): ``(z - latents_mean) * scaling_factor / latents_std``, scaling_factor 1
  where the config has none (Wan);
* otherwise ``(z - shift_factor) * scaling_factor`` (shift 0 when absent: CogVideoX, Hunyuan,
  SD/SDXL; Flux/SD3 ``AutoencoderKL`` have a shift).

Nothing is downloaded and nothing is unpickled: weights load with ``local_files_only=True`` and
``use_safetensors=True``.
"""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any

import torch

from univid.autoencoder.base import Autoencoder
from univid.config.sections import BUILTIN_AUTOENCODERS
from univid.errors import CorruptFileError, InputError
from univid.files import CONFIG_LIMIT, check_folder_files, read_json

VIDEO_VAES = (
    "AutoencoderKLWan",
    "AutoencoderKLLTXVideo",
    "AutoencoderKLCogVideoX",
    "AutoencoderKLHunyuanVideo",
)
IMAGE_VAES = ("AutoencoderKL",)
SUPPORTED = VIDEO_VAES + IMAGE_VAES
# Frames an image VAE encodes/decodes in one call (memory bound, results do not depend on it).
IMAGE_FRAME_BATCH = 16


def _supported() -> str:
    return ", ".join(SUPPORTED)


def _first_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a line ending in ':' keeps the next one)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def read_vae_config(folder: Path, spec: str) -> tuple[str, dict[str, Any]]:
    """``(class name, config)`` of a diffusers VAE folder; anything else is an InputError."""
    if not folder.is_dir():
        names = ", ".join(map(repr, BUILTIN_AUTOENCODERS))
        raise InputError(
            f"autoencoder '{spec}' is not one of {names} nor an existing "
            "folder (a local diffusers VAE folder with config.json is expected; supported: "
            f"{_supported()})"
        )
    # Before diffusers or safetensors reads it: no FIFO they would block on, no device.
    check_folder_files(folder, "autoencoder folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InputError(
            f"autoencoder folder {folder} has no config.json (a local diffusers VAE folder is "
            f"expected; supported: {_supported()})"
        )
    config = read_json(config_path, CONFIG_LIMIT)
    class_name = config.get("_class_name")
    if class_name not in SUPPORTED:
        found = f"'{class_name}'" if class_name else "no _class_name"
        raise InputError(
            f"autoencoder folder {folder} holds {found} in config.json; supported: {_supported()}"
        )
    return class_name, config


def _check_weights(folder: Path) -> None:
    """Before diffusers looks: refuse a folder whose only weights are pickled, and report a
    damaged safetensors file as a :class:`CorruptFileError` (only headers are read here)."""
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError, ValueError) as exc:
            raise CorruptFileError(
                f"cannot read {path} as safetensors: {_first_line(exc)}"
            ) from None
    if files or any(folder.glob("*.safetensors.index.json")):
        return
    pickled = sorted(
        p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")
    )
    if pickled:
        raise InputError(
            f"autoencoder folder {folder} has only pickled weights ({', '.join(pickled)}); univid "
            "loads safetensors only (convert them, e.g. save_pretrained(..., "
            "safe_serialization=True))"
        )
    raise InputError(f"autoencoder folder {folder} has no diffusion_pytorch_model.safetensors")


def _ratios(class_name: str, model: Any) -> tuple[int, int, int]:
    """``(temporal_ratio, spatial_ratio, frame_step)`` from the model's configuration."""
    cfg = model.config
    if class_name == "AutoencoderKLWan":
        down = [bool(d) for d in cfg["temperal_downsample"]]
        spatial = 2 ** len(down) * int(cfg.get("patch_size") or 1)
        temporal = 2 ** sum(down)
        return temporal, spatial, temporal
    if class_name in ("AutoencoderKLLTXVideo", "AutoencoderKLHunyuanVideo"):
        temporal = int(model.temporal_compression_ratio)
        return temporal, int(model.spatial_compression_ratio), temporal
    if class_name == "AutoencoderKLCogVideoX":
        temporal = int(cfg["temporal_compression_ratio"])
        # Its decoder only inverts the encoder for an odd number of latent frames (13 -> 49).
        return temporal, 2 ** (len(cfg["block_out_channels"]) - 1), 2 * temporal
    return 1, 2 ** (len(cfg["block_out_channels"]) - 1), 1  # AutoencoderKL


def _channel_vector(values: Any, channels: int, name: str, folder: Path) -> torch.Tensor:
    try:
        vector = torch.as_tensor(values, dtype=torch.float32).detach().cpu().flatten()
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"autoencoder folder {folder}: {name} is not a list of numbers") from None
    if vector.numel() != channels or not torch.isfinite(vector).all():
        raise InputError(
            f"autoencoder folder {folder}: {name} must be {channels} finite numbers "
            f"(one per latent channel), got {vector.numel()}"
        )
    return vector


def _normalisation(
    class_name: str, model: Any, channels: int, folder: Path
) -> tuple[torch.Tensor, torch.Tensor, float, dict[str, Any]]:
    """``(mean, std, scale, description)``: normalised = (z - mean) * scale / std."""
    cfg = model.config
    if class_name == "AutoencoderKLLTXVideo":
        mean, std = getattr(model, "latents_mean", None), getattr(model, "latents_std", None)
    else:
        mean, std = cfg.get("latents_mean"), cfg.get("latents_std")
    raw_scale = cfg.get("scaling_factor")
    scale = 1.0 if raw_scale is None else raw_scale
    if not isinstance(scale, int | float) or not math.isfinite(scale) or scale == 0:
        raise InputError(
            f"autoencoder folder {folder}: scaling_factor must be a finite non-zero number, "
            f"got {raw_scale!r}"
        )
    scale = float(scale)
    if mean is not None and std is not None:
        mean_v = _channel_vector(mean, channels, "latents_mean", folder)
        std_v = _channel_vector(std, channels, "latents_std", folder)
        if (std_v == 0).any():
            raise InputError(f"autoencoder folder {folder}: latents_std has a zero entry")
        desc = {
            "formula": "(z - latents_mean) * scaling_factor / latents_std",
            "latents_mean": mean_v.tolist(),
            "latents_std": std_v.tolist(),
            "scaling_factor": scale,
        }
        return mean_v, std_v, scale, desc
    raw_shift = cfg.get("shift_factor")
    shift = 0.0 if raw_shift is None else raw_shift
    if not isinstance(shift, int | float) or not math.isfinite(shift):
        raise InputError(
            f"autoencoder folder {folder}: shift_factor must be a finite number, got {raw_shift!r}"
        )
    desc = {
        "formula": "(z - shift_factor) * scaling_factor",
        "shift_factor": float(shift),
        "scaling_factor": scale,
    }
    return torch.full((channels,), float(shift)), torch.ones(channels), scale, desc


class DiffusersAutoencoder(Autoencoder):
    """A frozen diffusers VAE with the project's shape checks and latent normalisation.

    ``model`` is the diffusers module itself. For LTX-Video VAEs with timestep conditioning the
    decoder gets ``decode_timestep`` (0 by default) and no decode noise, so decoding stays
    deterministic.
    """

    def __init__(
        self,
        model: Any,
        class_name: str,
        spec: str,
        folder: Path,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model
        self.class_name = class_name
        self.spec = spec
        self.device = torch.device(device)
        self.dtype: torch.dtype = next(model.parameters()).dtype
        cfg = model.config
        key = "z_dim" if class_name == "AutoencoderKLWan" else "latent_channels"
        self.channels = int(cfg[key])
        self.temporal_ratio, self.spatial_ratio, self.frame_step = _ratios(class_name, model)
        if class_name == "AutoencoderKLWan":
            # Its tiled encode/decode divides by this attribute; keep it true to the structure.
            model.spatial_compression_ratio = self.spatial_ratio
        mean, std, scale, self._norm_desc = _normalisation(class_name, model, self.channels, folder)
        # Normalise in float64 (where the device has it) so decode(encode(x)) gives the VAE the
        # very latents it produced, up to float32 rounding of the normalised values.
        self._math_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        shape = (1, self.channels, 1, 1, 1)
        self._mean = mean.view(shape).to(self.device, self._math_dtype)
        self._std = std.view(shape).to(self.device, self._math_dtype)
        self._scale = scale
        self.timestep_conditioning = bool(cfg.get("timestep_conditioning", False))
        self.decode_timestep = 0.0
        self.tiling = False

    # -- raw VAE calls ---------------------------------------------------------------------------

    def _raw_encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.model.encode(video).latent_dist.mode()

    def _raw_decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.class_name == "AutoencoderKLLTXVideo":
            temb = None
            if self.timestep_conditioning:
                temb = torch.full(
                    (z.shape[0],), self.decode_timestep, device=z.device, dtype=z.dtype
                )
            return self.model.decode(z, temb).sample
        return self.model.decode(z).sample

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        x = video.to(self.device, self.dtype)
        if self.class_name in IMAGE_VAES:
            batch, _, frames, height, width = x.shape
            frames_2d = x.permute(0, 2, 1, 3, 4).reshape(batch * frames, 3, height, width)
            z = torch.cat([self._raw_encode(c) for c in frames_2d.split(IMAGE_FRAME_BATCH)])
            z = z.reshape(batch, frames, *z.shape[1:]).permute(0, 2, 1, 3, 4)
        else:
            z = self._raw_encode(x)
        normalised = (z.to(self._math_dtype) - self._mean) * self._scale / self._std
        return normalised.float()

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.device, self._math_dtype) * self._std / self._scale + self._mean
        z = z.to(self.dtype)
        if self.class_name in IMAGE_VAES:
            batch, channels, frames, height, width = z.shape
            z2d = z.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
            x = torch.cat([self._raw_decode(c) for c in z2d.split(IMAGE_FRAME_BATCH)])
            return x.reshape(batch, frames, *x.shape[1:]).permute(0, 2, 1, 3, 4)
        return self._raw_decode(z)

    # -- options / description -------------------------------------------------------------------

    def set_tiling(self, on: bool, **options: Any) -> None:
        """Turn the VAE's tiled encoding/decoding on or off. ``options`` go to diffusers'
        ``enable_tiling`` (e.g. ``tile_sample_min_height``) or set the VAE attribute of that name
        (``AutoencoderKL``: ``tile_sample_min_size``, ``tile_overlap_factor``)."""
        if not on:
            self.model.disable_tiling()
            self.tiling = False
            return
        accepted = inspect.signature(self.model.enable_tiling).parameters
        direct = {k: v for k, v in options.items() if k in accepted}
        extra = {k: v for k, v in options.items() if k not in accepted}
        unknown = [k for k in extra if not hasattr(self.model, k)]
        if unknown:
            raise InputError(f"{self.class_name} has no tiling option {unknown[0]}")
        self.model.enable_tiling(**direct)
        for key, value in extra.items():
            setattr(self.model, key, value)
        if self.class_name in IMAGE_VAES and "tile_sample_min_size" in options:
            self.model.tile_latent_min_size = int(options["tile_sample_min_size"]) // (
                self.spatial_ratio
            )
        self.tiling = True

    def normalisation(self) -> dict[str, Any]:
        return dict(self._norm_desc)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["class"] = self.class_name
        info["dtype"] = str(self.dtype).removeprefix("torch.")
        if self.timestep_conditioning:
            info["decode_timestep"] = self.decode_timestep
        return info


def load_diffusers_autoencoder(
    spec: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    tiling: bool = False,
) -> DiffusersAutoencoder:
    """A supported diffusers VAE from the local folder ``spec``, frozen, on ``device``."""
    folder = Path(spec)
    class_name, _ = read_vae_config(folder, spec)
    _check_weights(folder)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import diffusers
        from diffusers.utils import logging as diffusers_logging
    except ImportError:
        raise InputError(
            f"loading the autoencoder in {folder} needs the 'diffusers' package "
            "(pip install diffusers)"
        ) from None
    from safetensors import SafetensorError

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    cls = getattr(diffusers, class_name)
    try:
        # The class is one of SUPPORTED, never one the folder names, so no folder code can run;
        # trust_remote_code=False says so to diffusers too.
        model = cls.from_pretrained(
            folder,
            local_files_only=True,
            use_safetensors=True,
            torch_dtype=dtype,
            trust_remote_code=False,
        )
    except torch.OutOfMemoryError:
        raise
    except SafetensorError as exc:
        raise CorruptFileError(
            f"cannot read the weights in {folder} as safetensors: {_first_line(exc)}"
        ) from None
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, AttributeError) as exc:
        raise InputError(
            f"cannot load the {class_name} autoencoder in {folder}: {_first_line(exc)}"
        ) from None
    model = model.to(device)
    model.eval().requires_grad_(False)
    autoencoder = DiffusersAutoencoder(model, class_name, spec, folder, device=device)
    if tiling:
        autoencoder.set_tiling(True)
    return autoencoder
