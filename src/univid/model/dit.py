"""The DiT single stream: adaLN-Zero blocks, 3-D RoPE and QK-norm over [text | video].

The same one sequence as :mod:`univid.model.encoder` (no cross-attention, no second stream), but
time enters the way DiT, PixArt-alpha, SD3 and Flux do it: a conditioning vector c = time
embedding + pooled text sets a shift, scale and gate around every attention and MLP (adaptive
LayerNorm). Gates and the output head start at zero, so every block starts as the identity.
``adaln='shared'`` computes the modulation with one MLP for all blocks and gives each block a
learned offset (PixArt-alpha's adaLN-single), which removes most of the modulation parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from univid.model.embed import (
    TimeEmbedding,
    check_time,
    patchify,
    per_sample_linear,
    rowwise,
    unpatchify,
    velocity_from_data,
)
from univid.model.rope import apply_rope, rope_angles, rope_tables, stream_positions

MODULATIONS = 6  # shift, scale, gate for attention; shift, scale, gate for the MLP


def modulation(mlp: nn.Sequential, c: torch.Tensor) -> torch.Tensor:
    """SiLU -> Linear of the conditioning vector(s) c (B, D) or (B, G, D), the same bits
    whatever B or G."""
    return per_sample_linear(mlp[1], rowwise(mlp[0], c, 2))


def by_group(
    fn: Callable[..., torch.Tensor],
    tokens: tuple[torch.Tensor, ...],
    params: tuple[torch.Tensor, ...],
    text_len: int,
) -> torch.Tensor:
    """``fn(*tokens, *params)`` with each param broadcast to the tokens it conditions.

    tokens are (B, N, D). With one time per sample the params are (B, D) and hold for every
    token. With one time per frame they are (B, 1 + T', D): row 0 for the first ``text_len``
    tokens (the caption), row 1 + f for the video tokens of frame f, which follow in raster
    order, so each frame's row is broadcast over its H' W' tokens and never copied per token.
    """
    if params[0].ndim == 2:
        return fn(*tokens, *(p[:, None] for p in params))
    frames = params[0].shape[1] - 1
    # split, not two slices: its backward is one cat, where a slice's fills a zero tensor
    parts = [x.split([text_len, x.shape[1] - text_len], dim=1) for x in tokens]
    rows = [p.split([1, frames], dim=1) for p in params]
    text_args = (*(t for t, _ in parts), *(r for r, _ in rows))
    video_args = (
        *(v.unflatten(1, (frames, -1)) for _, v in parts),  # (B, T', H'W', D)
        *(r[:, :, None] for _, r in rows),  # (B, T', 1, D)
    )
    dtypes = {a.dtype for a in (*tokens, *params)}
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or len(dtypes) > 1:
        return torch.cat([fn(*text_args), fn(*video_args).flatten(1, 2)], dim=1)
    # Eager sampling: both parts written in place into one tensor, saving the copy of a cat
    # (autograd cannot take out=; a compiled block fuses the cat itself).
    out = torch.empty_like(tokens[0])
    fn(*text_args, out=out[:, :text_len])
    fn(*video_args, out=out[:, text_len:].unflatten(1, (frames, -1)))
    return out


def modulate(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, text_len: int = 0
) -> torch.Tensor:
    """x (B, N, D) * (1 + scale) + shift, per sample or per frame (see :func:`by_group`)."""
    return by_group(_modulate, (x,), (shift, scale), text_len)


def gated(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor, text_len: int = 0) -> torch.Tensor:
    """The residual x + gate * y, per sample or per frame (see :func:`by_group`)."""
    return by_group(_gated, (x, y), (gate,), text_len)


def _modulate(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    return torch.addcmul(shift, x, 1 + scale, out=out)


def _gated(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    return torch.addcmul(x, gate, y, out=out)


class Attention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V through ``F.scaled_dot_product_attention`` (its kernel is
    picked with ``torch.nn.attention.sdpa_kernel`` around the call). A module of its own so that
    another implementation can be swapped in from outside (see :func:`univid.speed.attention`).
    """

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """q (B, heads, N, head_dim), k and v (B, heads, M, head_dim) (M > N with a KV cache);
        mask None or bool broadcastable to (B, 1, N, M), True = attend."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` whose weight takes the input's dtype, so bf16 activations under autocast
    take the fused path (a fp32 weight with a bf16 input falls back to separate ops, with a
    warning; in fp32 this is ``nn.RMSNorm`` exactly)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


class SwiGLU(nn.Module):
    """silu(x W1) * (x W3) -> W2, the gated MLP of LLaMA and Flux."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def make_mlp(width: int, mlp_ratio: float, kind: str) -> nn.Module:
    """GELU MLP of hidden ``mlp_ratio * width``, or a SwiGLU with the same parameter count."""
    hidden = int(mlp_ratio * width)
    if kind == "swiglu":
        return SwiGLU(width, int(2 * hidden / 3))
    # Exact (erf) GELU: CPU's vectorised tanh-GELU rounds the elements of a tensor's tail
    # differently, which made a batch differ from its items run alone.
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


class DiTBlock(nn.Module):
    """Pre-norm attention + MLP, each wrapped in shift/scale before and a gate after."""

    def __init__(
        self, width: int, heads: int, mlp_ratio: float, mlp: str, qk_norm: bool, shared: bool
    ) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        norm = (lambda: RMSNorm(self.head_dim, eps=1e-6)) if qk_norm else nn.Identity
        self.q_norm, self.k_norm = norm(), norm()
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = make_mlp(width, mlp_ratio, mlp)
        self.shared = shared
        self.attention = Attention()
        if shared:  # per-block learned offset on the shared modulation
            self.offset = nn.Parameter(torch.zeros(MODULATIONS, width))
        else:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, MODULATIONS * width))

    def modulation_of(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, [G,] 6, D) shift/scale/gate pairs for this block from c (or the shared
        modulation), with G = 1 + T' rows when time is per frame."""
        if self.shared:
            return cond + self.offset
        return modulation(self.modulation, cond).unflatten(-1, (MODULATIONS, -1))

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        text_len: int = 0,
        past: PastKV | None = None,
        keep: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """x (B, N, D); cond is c (B, [G,] D), or the shared modulation (B, [G,] 6, D) for
        shared blocks, G = 1 + T' rows (caption, then each frame) when time is per frame;
        rope the (cos, sin) tables (N, head_dim); mask None (attend everywhere) or bool
        (B, 1, 1 or N, M), False = never attended (padding, or a later chunk); text_len the
        caption tokens at the front of x (used only with per-frame rows). ``past`` holds the
        keys and values of the P cached tokens before x (M = P + N);
        ``keep`` collects this block's own (rotated keys, values)."""
        B, N, D = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation_of(cond).unbind(dim=-2)

        h = modulate(self.norm1(x), shift1, scale1, text_len)
        q, k, v = self.qkv(h).view(B, N, 3, self.heads, self.head_dim).unbind(dim=2)
        q = apply_rope(self.q_norm(q), rope).transpose(1, 2)  # (B, heads, N, head_dim)
        k = apply_rope(self.k_norm(k), rope).transpose(1, 2)
        v = v.transpose(1, 2)
        if keep is not None:
            keep.append((k, v))
        if past is not None:
            k, v = past.extend(k, v)
        attn = self.attention(q, k, v, mask)
        x = gated(x, gate1, self.proj(attn.transpose(1, 2).reshape(B, N, D)), text_len)
        h = modulate(self.norm2(x), shift2, scale2, text_len)
        return gated(x, gate2, self.mlp(h), text_len)


class DiTBlocks(nn.ModuleList):
    """The stack of blocks, called as one module (so a wrapper can stand in for all of them)."""

    def forward(
        self,
        seq: torch.Tensor,
        cond: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        text_len: int = 0,
        past: list[PastKV] | None = None,
        keep: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        for i, block in enumerate(self):
            if past is None and keep is None:  # the plain call, what wrappers of a block expect
                seq = block(seq, cond, rope, mask, text_len)
            else:
                seq = block(
                    seq, cond, rope, mask, text_len, None if past is None else past[i], keep
                )
        return seq


class PastKV:
    """One block's cached keys and values (B, heads, P, head_dim), in buffers with ``room``
    for the tokens that follow: a forward over them writes their keys and values into that room
    rather than copying the whole context into a new tensor at every step of the ODE."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, room: int) -> None:
        B, heads, P, head_dim = k.shape
        self.length = P
        self.k, self.v = (x.new_empty(B, heads, P + room, head_dim) for x in (k, v))
        self.k[:, :, :P], self.v[:, :, :P] = k, v

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, values) of the cached tokens followed by ``k``, ``v`` (B, heads, N,
        head_dim): views of the buffers when the N tokens fit the room (the next forward
        overwrites them), a new tensor when they do not or autograd is recording."""
        P, N = self.length, k.shape[2]
        fits = P + N <= self.k.shape[2] and k.dtype == self.k.dtype
        if torch.is_grad_enabled() or not fits:
            return torch.cat([self.k[:, :, :P], k], dim=2), torch.cat([self.v[:, :, :P], v], 2)
        self.k[:, :, P : P + N], self.v[:, :, P : P + N] = k, v
        return self.k[:, :, : P + N], self.v[:, :, : P + N]


@dataclass
class KVCache:
    """The keys and values of a context (the caption and earlier latent frames) for every
    block, made once by :meth:`DiTStream.prefill` and read by each later forward that continues
    it. Exact for a block-causal model: nothing in the context attends to what follows it."""

    layers: list[PastKV]  # per block, keys rotated
    ids: torch.Tensor  # (P,) chunk of each cached token, -1 for the caption
    pad: torch.Tensor | None  # (B, P) bool, False on caption padding; None when there is none
    frames: int  # latent frames in the context: the next frame's position


def chunk_ids(
    text_len: int, frames: int, per_frame: int, first: int, chunk: int, device: torch.device
) -> torch.Tensor:
    """(text_len + frames * per_frame,) chunk index of each token of [text | video]: -1 for the
    caption, (first + f) // chunk for the tokens of latent frame f."""
    frame = torch.arange(first, first + frames, device=device).repeat_interleave(per_frame)
    return torch.cat([torch.full((text_len,), -1, device=device), frame // chunk])


def attention_mask(
    query_ids: torch.Tensor | None, key_ids: torch.Tensor | None, pad: torch.Tensor | None
) -> torch.Tensor | None:
    """Bool mask (B or 1, 1, N, M), True = attend: a token sees every key of its own chunk or an
    earlier one (block-causal; the caption, chunk -1, sees only itself) when ``key_ids`` are
    given, and never a padded key (``pad`` (B, M) False); None when nothing is masked."""
    mask = None
    if query_ids is not None and key_ids is not None:
        mask = (key_ids[None, :] <= query_ids[:, None])[None, None]  # (1, 1, N, M)
    if pad is not None:
        padding = pad[:, None, None, :]  # (B, 1, 1, M): broadcast over heads and queries
        mask = padding if mask is None else mask & padding
    return mask


class DiTStream(nn.Module):
    """forward(x, t, text, text_mask) -> velocity, with x and velocity shaped (B, C, T, H, W).

    ``prediction`` works as in :class:`univid.model.EncoderStream`; ``adaln`` is 'block'
    (adaLN-Zero, one modulation MLP per block) or 'shared' (one for all blocks + offsets).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        patch: tuple[int, int, int] = (2, 4, 4),
        width: int = 256,
        depth: int = 6,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        text_dim: int = 384,
        time_freq_dim: int = 256,
        prediction: str = "velocity",
        min_time: float = 0.05,
        adaln: str = "block",
        mlp: str = "gelu",
        qk_norm: bool = True,
        rope_base: float = 10000.0,
        step_input: bool = False,
        chunk: int = 0,
    ) -> None:
        super().__init__()
        head_dim = width // heads
        if width % heads or head_dim % 2 or head_dim < 6:
            raise ValueError(f"width/heads must be an even head size >= 6, got {width}/{heads}")
        if prediction not in ("velocity", "data"):
            raise ValueError(f"prediction must be 'velocity' or 'data', got {prediction!r}")
        if adaln not in ("block", "shared"):
            raise ValueError(f"adaln must be 'block' or 'shared', got {adaln!r}")
        if mlp not in ("gelu", "swiglu"):
            raise ValueError(f"mlp must be 'gelu' or 'swiglu', got {mlp!r}")
        self.patch, self.width, self.head_dim = tuple(patch), width, head_dim
        self.prediction, self.min_time, self.rope_base = prediction, min_time, rope_base
        self.shared = adaln == "shared"
        if chunk < 0:
            raise ValueError(f"chunk must be >= 0 latent frames (0: full attention), got {chunk}")
        # Block-causal attention over chunks of this many latent frames (0: every token sees all).
        self.chunk = chunk
        patch_dim = in_channels * math.prod(patch)
        self.video_in = nn.Linear(patch_dim, width)
        self.text_norm = nn.LayerNorm(text_dim)
        self.text_in = nn.Linear(text_dim, width)
        self.text_pool = nn.Linear(text_dim, width)  # pooled caption -> conditioning vector
        self.time_embed = TimeEmbedding(time_freq_dim, width)
        # A few-step student also sees the size of the sampler's step (0: the velocity itself).
        self.step_embed = TimeEmbedding(time_freq_dim, width) if step_input else None
        if self.shared:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, MODULATIONS * width))
        self.blocks = DiTBlocks(
            DiTBlock(width, heads, mlp_ratio, mlp, qk_norm, self.shared) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(width, patch_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """All initialisation in one place: xavier linears; modulations, gates, head at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        zero = [self.modulation_out[1], self.head]
        # The step embedding starts at zero: a model that gains it computes what it did before.
        zero += [self.step_embed.mlp[2]] if self.step_embed is not None else []
        zero += [self.modulation[1]] if self.shared else [b.modulation[1] for b in self.blocks]
        for linear in zero:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def condition(
        self,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None,
        step: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """c = time embedding + projection of the mean of the real caption tokens: (B, D) for
        t (B,); for per-frame t (B, T') it is (B, 1 + T', D), row 1 + f for frame f's video
        tokens and row 0 for the caption tokens, which take the time of the noisiest frame
        (the largest t: with every frame at one t that is the per-sample c, bit for bit; in a
        block-causal model the first frame's, so that the caption, which attends only to
        itself, does not change with the frames that follow).
        A model with a step input adds the embedding of ``step`` (B,) to every row."""
        if text_mask is None:
            pooled = text.mean(1)
        else:
            weights = text_mask.to(text.dtype)[..., None]
            pooled = (text * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        pooled = per_sample_linear(self.text_pool, pooled)
        if self.step_embed is not None:
            step = t.new_zeros(t.shape[0]) if step is None else step.to(t.dtype)
            pooled = pooled + self.step_embed(step)
        elif step is not None:
            raise ValueError("this model has no step input (model.step_input)")
        if t.ndim == 1:
            return self.time_embed(t) + pooled
        caption = t[:, :1] if self.chunk else t.amax(1, keepdim=True)
        rows = torch.cat([caption, t], dim=1)  # (B, 1 + T')
        return self.time_embed(rows) + pooled[:, None]

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None,
        step: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x (B, C, T, H, W); t (B,), or (B, T') with one time per latent frame (T' = T / pt,
        see :func:`check_time`); text (B, L, Dtext), text_mask (B, L) bool, True = real, or
        None when no caption has padding: then attention runs without any mask, which lets
        every fused kernel take it. ``step`` (B,): the sampler's step size, for a model with a
        step input (None = 0: the velocity at t). ``cache`` (block-causal models): the context
        made by :meth:`prefill`; x then holds only the frames that follow it, and the output
        equals the last frames of one forward over the context and x together."""
        B, C, T, H, W = x.shape
        seq, c, L, *_ = self.run_blocks(x, t, text, text_mask, step, cache, None)
        shift, scale = modulation(self.modulation_out, c).chunk(2, dim=-1)
        out = self.head(modulate(self.norm_out(seq[:, L:]), shift, scale))
        out = unpatchify(out, self.patch, (C, T, H, W))
        if self.prediction == "velocity":
            return out
        return velocity_from_data(x, t, out, self.min_time)

    @torch.no_grad()
    def prefill(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None,
        step: torch.Tensor | None = None,
    ) -> KVCache:
        """The KV cache of the context [caption | x] (arguments as in :meth:`forward`, x may
        have 0 frames): every block's keys and values, for forwards over the frames after it.
        Only a block-causal model (``chunk`` > 0) has a context that later frames cannot
        change."""
        keep: list[tuple[torch.Tensor, torch.Tensor]] = []
        *_, ids, pad = self.run_blocks(x, t, text, text_mask, step, None, keep)
        _, ph, pw = self.patch
        room = self.chunk * (x.shape[3] // ph) * (x.shape[4] // pw)  # one chunk's tokens
        layers = [PastKV(k, v, room) for k, v in keep]
        return KVCache(layers, ids, pad, x.shape[2] // self.patch[0])

    def run_blocks(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None,
        step: torch.Tensor | None,
        cache: KVCache | None,
        keep: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor | None, torch.Tensor | None]:
        """Embed and run the blocks: (sequence out (B, L' + N, D), c, L' caption tokens in
        it, the chunk ids (M,) and padding (B, M) or None of the keys attended). Without a
        cache the sequence is [caption | video] (``keep`` collects each block's keys and
        values); with one it is the video alone, placed after the cached frames."""
        if (cache is not None or keep is not None) and not self.chunk:
            raise ValueError("a KV cache needs block-causal attention (chunk > 0)")
        B, C, T, H, W = x.shape
        pt, ph, pw = self.patch
        grid = (T // pt, H // ph, W // pw)
        check_time(t, B, grid[0])
        text = self.text_norm(text)
        c = self.condition(t, text, text_mask, step)
        video = self.video_in(patchify(x, self.patch))
        first = 0 if cache is None else cache.frames
        L = text.shape[1] if cache is None else 0  # a cache holds the caption's keys already
        seq = torch.cat([self.text_in(text).to(video.dtype), video], dim=1) if L else video
        ids = None
        if self.chunk:
            ids = chunk_ids(L, grid[0], grid[1] * grid[2], first, self.chunk, x.device)
        pad = None
        if text_mask is not None and cache is None:
            pad = torch.cat([text_mask, text_mask.new_ones(B, video.shape[1])], dim=1)
        elif cache is not None and cache.pad is not None:
            pad = torch.cat([cache.pad, cache.pad.new_ones(B, video.shape[1])], dim=1)
        key_ids = ids if cache is None or ids is None else torch.cat([cache.ids, ids])
        query_ids = ids
        if cache is not None and first // self.chunk == (first + grid[0] - 1) // self.chunk:
            query_ids = None  # one chunk after its context sees every key: no mask to apply
        mask = attention_mask(query_ids, key_ids, pad)
        positions = stream_positions(L, grid, x.device, first)
        cos, sin = rope_tables(rope_angles(positions, self.head_dim, self.rope_base))
        rope = (cos[:, None], sin[:, None])  # broadcast over heads: q is (B, N, heads, head_dim)
        cond = modulation(self.modulation, c).unflatten(-1, (MODULATIONS, -1)) if self.shared else c
        if cache is None and keep is None:  # the plain call, what a stand-in for the blocks takes
            return self.blocks(seq, cond, rope, mask, L), c, L, key_ids, pad
        past = None if cache is None else cache.layers
        return self.blocks(seq, cond, rope, mask, L, past, keep), c, L, key_ids, pad
