"""The single stream on torch.nn.TransformerEncoder.

One sequence [time | text | video] of width D goes through a stock pre-norm
TransformerEncoder, so every video token attends to every other video token (space and time)
and to every text token in the same attention; text padding is masked with
``src_key_padding_mask``. Only the video tokens are read out, as a velocity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from univid.model.embed import (
    TimeEmbedding,
    check_time,
    patchify,
    sincos_1d,
    sincos_3d,
    unpatchify,
    velocity_from_data,
)

TIME, TEXT, VIDEO = 0, 1, 2  # modality ids


class EncoderStream(nn.Module):
    """forward(x, t, text, text_mask) -> velocity, with x and velocity shaped (B, C, T, H, W).

    ``prediction='data'`` makes the head predict the clean video and returns the velocity
    implied by it; 'velocity' reads the velocity out directly. ``time_mode='token'`` feeds t
    as the first token only; 'token+add' also adds the time embedding to every token.
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
        time_mode: str = "token",
    ) -> None:
        super().__init__()
        if width % 2:
            raise ValueError(f"width must be even for sin-cos positions, got {width}")
        if prediction not in ("velocity", "data"):
            raise ValueError(f"prediction must be 'velocity' or 'data', got {prediction!r}")
        if time_mode not in ("token", "token+add"):
            raise ValueError(f"time_mode must be 'token' or 'token+add', got {time_mode!r}")
        self.patch = tuple(patch)
        self.width = width
        self.prediction, self.min_time, self.time_mode = prediction, min_time, time_mode
        patch_dim = in_channels * math.prod(patch)
        self.video_in = nn.Linear(patch_dim, width)
        # MiniLM-style hidden states have per-channel offsets; normalise before projecting.
        self.text_norm = nn.LayerNorm(text_dim)
        self.text_in = nn.Linear(text_dim, width)
        self.time_embed = TimeEmbedding(time_freq_dim, width)
        self.modality = nn.Embedding(3, width)
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            int(mlp_ratio * width),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(
            layer, depth, norm=nn.LayerNorm(width), enable_nested_tensor=False
        )
        self.head = nn.Linear(width, patch_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """All initialisation in one place; the output head starts at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for layer in self.blocks.layers:
            nn.init.xavier_uniform_(layer.self_attn.in_proj_weight)
            nn.init.zeros_(layer.self_attn.in_proj_bias)
        nn.init.normal_(self.modality.weight, std=0.02)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x (B, C, T, H, W); t (B,), or (B, T') one per latent frame, which needs
        ``time_mode='token+add'``: each frame's time embedding is added to its video tokens,
        while the time token and the caption tokens take the largest t (the noisiest frame);
        text (B, L, Dtext), text_mask (B, L) bool, True = real, or None when no caption has
        padding (attention then runs without a mask)."""
        B, C, T, H, W = x.shape
        pt, ph, pw = self.patch
        grid = (T // pt, H // ph, W // pw)
        check_time(t, B, grid[0])
        if t.ndim == 2 and self.time_mode != "token+add":
            raise ValueError("per-frame t needs time_mode='token+add' (or the dit backbone)")
        L = text.shape[1]
        emb = self.modality.weight  # (3, D)

        video = self.video_in(patchify(x, self.patch))  # (B, Nv, D)
        video = video + sincos_3d(grid, self.width, x.device).to(video.dtype) + emb[VIDEO]
        positions = torch.arange(L, device=x.device)
        txt = self.text_in(self.text_norm(text))  # (B, L, D)
        txt = txt + sincos_1d(positions, self.width).to(txt.dtype) + emb[TEXT]
        per_frame = t.ndim == 2
        # per frame, row 0 is the noisiest frame's time, for the time and caption tokens
        rows = self.time_embed(torch.cat([t.amax(1, keepdim=True), t], dim=1) if per_frame else t)
        t_emb = rows[:, :1] if per_frame else rows[:, None]  # (B, 1, D)

        seq = torch.cat([(t_emb + emb[TIME]).to(video.dtype), txt.to(video.dtype), video], dim=1)
        if self.time_mode == "token+add":
            # A lone time token reaches the video only through attention weights, too weakly
            # to tell t = 0.3 from t = 0.95 early in training; adding t to every token does.
            if per_frame:  # each frame's video tokens get their own frame's time
                head = seq[:, : 1 + L] + t_emb.to(seq.dtype)
                frames = seq[:, 1 + L :].unflatten(1, (grid[0], -1))  # (B, T', H'W', D)
                frames = frames + rows[:, 1:, None].to(seq.dtype)
                seq = torch.cat([head, frames.flatten(1, 2)], dim=1)
            else:
                seq = seq + t_emb.to(seq.dtype)
        padding = None
        if text_mask is not None:
            keep = torch.ones(B, 1 + L + video.shape[1], dtype=torch.bool, device=x.device)
            keep[:, 1 : 1 + L] = text_mask
            padding = ~keep
        out = self.blocks(seq, src_key_padding_mask=padding)  # (B, 1 + L + Nv, D)
        out = unpatchify(self.head(out[:, 1 + L :]), self.patch, (C, T, H, W))
        if self.prediction == "velocity":
            return out
        return velocity_from_data(x, t, out, self.min_time)
