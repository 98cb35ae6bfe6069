"""Fast paths applied to a built model from outside it: attention kernel, regional compile with a
persistent compile cache, activation checkpointing, int8 quantisation.

The model files import only torch and know nothing of these; each function here changes how an
existing model runs, never what it computes (up to floating-point rounding, which the tests
bound against the plain path).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from univid.errors import InputError
from univid.model.dit import Attention

# 'auto' lets PyTorch pick the fastest fused kernel that supports the inputs.
ATTENTION_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math", "naive")
QUANTIZATION = ("none", "int8-weight", "int8-dynamic")


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The repeated transformer blocks: the unit of sharding, checkpointing and compiling."""
    blocks = model.blocks
    return blocks.layers if isinstance(blocks, nn.TransformerEncoder) else blocks


class NaiveAttention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V with the N x N scores in memory: the reference the fused
    ``F.scaled_dot_product_attention`` kernels are checked and measured against."""

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(dim=-1) @ v


# Longest sequence for which bf16 CPU training takes :class:`MatmulAttention`. Forward + backward
# on 2 cores with AMX (benchmarks/cpu_bf16.py --attention, docs/cpu_bf16.jsonl): 2.2x faster than
# the flash kernel at 142 tokens, 1.4x at 270-528, equal at 1,056, 0.64x at 2,080.
MATMUL_ATTENTION_MAX_TOKENS = 1024


class MatmulAttention(Attention):
    """Attention for bf16 training on a CPU: two bf16 matmuls and a softmax for sequences up to
    :data:`MATMUL_ATTENTION_MAX_TOKENS`, ``F.scaled_dot_product_attention`` otherwise.

    PyTorch's CPU flash kernel is fast forward but its bf16 backward is not: at the bundled
    model's size it takes 2.2x the time of backpropagating through the plain product, whose
    matmuls run on the matrix units. Outside training (no grad), on other devices or in fp32
    this is :class:`univid.model.dit.Attention` exactly.
    """

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        fast = q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled()
        if not fast or q.shape[-2] > MATMUL_ATTENTION_MAX_TOKENS:
            return super().forward(q, k, v, mask)
        with torch.autocast("cpu", enabled=False):  # autocast would run the softmax in fp32
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
            if mask is not None:
                scores.masked_fill_(~mask, float("-inf"))
            return scores.softmax(dim=-1) @ v


def _replace_attention(
    model: nn.Module,
    kind: type[nn.Module],
    only: tuple[type[nn.Module], ...] = (Attention, NaiveAttention),
) -> list[tuple[nn.Module, str, nn.Module]]:
    """Put a new ``kind()`` in place of every attention module of the types ``only`` (through
    any wrapper around them); returns (parent, name, replaced module) of each."""
    replaced = [
        (parent, name, child)
        for parent in list(model.modules())
        for name, child in list(parent.named_children())
        if isinstance(child, only)
    ]
    for parent, name, _ in replaced:
        setattr(parent, name, kind())
    return replaced


def swap_attention(model: nn.Module, kind: type[nn.Module]) -> int:
    """Put a new ``kind()`` in place of every attention module of the DiT blocks (through any
    wrapper around them); returns how many were swapped."""
    return len(_replace_attention(model, kind))


@contextlib.contextmanager
def _swapped(
    model: nn.Module, kind: type[nn.Module], only: tuple[type[nn.Module], ...]
) -> Iterator[int]:
    """``kind()`` in place of the attention modules of the types ``only`` inside the ``with``
    block (yields how many), the original modules after it."""
    replaced = _replace_attention(model, kind, only)
    try:
        yield len(replaced)
    finally:
        for parent, name, child in replaced:
            setattr(parent, name, child)


@contextlib.contextmanager
def attention(model: nn.Module, backend: str = "auto") -> Iterator[None]:
    """Run ``model`` with one attention implementation inside the ``with`` block.

    flash / efficient / cudnn / math restrict ``F.scaled_dot_product_attention`` to that kernel
    (an input the kernel cannot take is an error, not a silent fallback; bf16 CPU training's
    :class:`MatmulAttention` steps aside); 'naive' swaps the DiT blocks' attention modules for
    :class:`NaiveAttention`, the reference path. The model's own modules are back afterwards.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if backend not in ATTENTION_BACKENDS:
        known = ", ".join(ATTENTION_BACKENDS)
        raise InputError(f"attention '{backend}' is unknown: one of {known}")
    if backend == "naive":
        with _swapped(model, NaiveAttention, (Attention, NaiveAttention)) as swapped:
            if not swapped:
                raise InputError("naive attention is only available for the dit backbone")
            yield
        return
    kernels = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    if backend not in kernels:
        yield
        return
    with _swapped(model, Attention, (MatmulAttention,)), sdpa_kernel(kernels[backend]):
        yield


def compile_cache_dir() -> Path:
    """Where compiled kernels are kept between runs: $UNIVID_COMPILE_CACHE, else
    $XDG_CACHE_HOME/univid/compile (~/.cache/univid/compile)."""
    if os.environ.get("UNIVID_COMPILE_CACHE"):
        return Path(os.environ["UNIVID_COMPILE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "univid" / "compile"


def use_compile_cache(path: Path | None = None) -> Path:
    """Point Inductor's on-disk caches (FX graphs, AOT autograd, kernels) at ``path`` so a second
    run of the same shapes loads compiled code instead of compiling again. A cache directory
    already chosen with TORCHINDUCTOR_CACHE_DIR is left as it is."""
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen:
        return Path(chosen)
    path = path or compile_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def prepare_blocks(
    model: nn.Module, checkpointing: bool, compile_blocks: bool, amp: torch.dtype | None = None
) -> None:
    """Activation checkpointing, then regional ``torch.compile``, on each block in place; for
    training under bf16 autocast (``amp``) the blocks' attention becomes :class:`MatmulAttention`.

    Compiling block by block (not the whole model) compiles one graph that every block of the
    same shape reuses, so compile time does not grow with depth; it serves training and sampling.
    """
    blocks = blocks_of(model)
    if compile_blocks:
        use_compile_cache()
    if amp == torch.bfloat16:
        swap_attention(blocks, MatmulAttention)
    for i, block in enumerate(blocks):
        if checkpointing:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
                checkpoint_wrapper,
            )

            block = checkpoint_wrapper(block)
        if compile_blocks:
            block.compile()
        blocks[i] = block


def quantize(model: nn.Module, mode: str) -> nn.Module:
    """int8 weights for inference through torchao, on the token-wise linears of the blocks.

    'int8-weight' stores weights in int8 and dequantises in the matmul; 'int8-dynamic' also
    quantises activations per token and runs int8 matmuls. The per-sample linears (time, caption,
    adaLN modulation) stay in float: they are tiny and their exact rounding keeps a batch equal
    to its videos made alone.
    """
    if mode not in QUANTIZATION:
        raise InputError(f"quantization '{mode}' is unknown: one of {', '.join(QUANTIZATION)}")
    if mode == "none":
        return model
    try:
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )
    except ImportError:
        raise InputError("int8 quantisation needs torchao: pip install 'univid[quant]'") from None
    config = (
        Int8WeightOnlyConfig() if mode == "int8-weight" else Int8DynamicActivationInt8WeightConfig()
    )

    def token_wise(module: nn.Module, name: str) -> bool:
        return (
            isinstance(module, nn.Linear)
            and name.startswith("blocks.")
            and ("modulation" not in name)
        )

    quantize_(model, config, filter_fn=token_wise)
    return model
