"""Streaming generation: a video of any length, made chunk by chunk by a block-causal model.

Each chunk of ``model.chunk`` latent frames is sampled by the ODE from its own noise, conditioned
on the caption and on the last ``stream.window`` latent frames made before it, the way the model
was trained: the context sits at positions 0 .. window - 1 and at time ``stream.context_time``
(re-noised to it), the chunk right after it. Positions never grow with the video's length, so
the 512th frame is made like the 16th, and nothing but the window is kept: memory is flat.

Nothing in the context attends to the chunk (block-causal attention), so the context's keys and
values are the same at every step of the chunk's ODE: they are computed once per chunk (the KV
cache, :meth:`univid.model.DiTStream.prefill`) and every step runs the chunk's tokens alone
against them. ``kv_cache=False`` runs the context with the chunk at every step instead, the
reference that the cache must equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from univid.flow import guidance_inputs, guided, ode_sample

TextFn = Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class StreamSettings:
    """How each chunk is sampled."""

    steps: int
    guidance: float  # the first chunk's, made from the caption alone
    context_guidance: float = 1.0  # every later chunk's, made from its context too
    solver: str = "euler"
    shift: float = 1.0
    context_time: float = 0.0
    kv_cache: bool = True
    history_guidance: float = 1.0  # a later chunk's, against the chunk without its context


def chunk_network(
    model: torch.nn.Module,
    context: torch.Tensor | None,
    text: torch.Tensor,
    mask: torch.Tensor | None,
    s: StreamSettings,
) -> Callable[..., torch.Tensor]:
    """The model as the sampler calls it for one chunk: (x, t, text, mask) -> velocity of the
    chunk's frames, with ``context`` (B, C, Tc, h, w) at ``s.context_time`` before them (None:
    the first chunk, alone with its caption). ``text``/``mask`` are the captions the guided
    sampler passes (:func:`univid.flow.guidance_inputs`), so a cache made from them holds
    both branches."""
    if context is None:
        return model
    pt = model.patch[0]
    frames = context.shape[2] // pt
    repeat = text.shape[0] // context.shape[0]  # 2 with guidance: both branches see it
    context = context.repeat(repeat, 1, 1, 1, 1)
    t_context = context.new_full((context.shape[0], frames), s.context_time)
    if s.kv_cache:
        cache = model.prefill(context, t_context, text, mask)

        def cached(x: torch.Tensor, t: torch.Tensor, text_: torch.Tensor, mask_: object):
            return model(x, t, text_, mask_, cache=cache)

        return cached

    def recomputed(x: torch.Tensor, t: torch.Tensor, text_: torch.Tensor, mask_: object):
        times = torch.cat([t_context, t[:, None].expand(-1, x.shape[2] // pt)], dim=1)
        out = model(torch.cat([context, x], dim=2), times, text_, mask_)
        return out[:, :, context.shape[2] :]

    return recomputed


@torch.no_grad()
def sample_chunk(
    model: torch.nn.Module,
    x: torch.Tensor,
    context: torch.Tensor | None,
    captions: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    s: StreamSettings,
) -> torch.Tensor:
    """One chunk's latents, sampled by the ODE from its noise ``x`` after ``context`` (latents
    (B, C, Tc, h, w) as given, or None for the first chunk) with ``captions`` = (caption, mask,
    empty caption, its mask): the first chunk guided by ``s.guidance``, a later one by
    ``s.context_guidance`` and, against the same chunk made without its context, by
    ``s.history_guidance``."""
    text, mask, null, null_mask = captions
    scale = s.guidance if context is None else s.context_guidance
    both, both_mask = guidance_inputs(text, mask, null, null_mask, scale)
    network = chunk_network(model, context, both, both_mask, s)
    velocity = guided(network, text, mask, null, null_mask, scale)
    if context is not None and s.history_guidance != 1.0:
        alone = guided(model, text, mask, null, null_mask, scale)  # the chunk without context
        velocity = _history_guided(velocity, alone, s.history_guidance)
    return ode_sample(velocity, x, s.steps, s.solver, s.shift)


def _history_guided(
    given: Callable[..., torch.Tensor], alone: Callable[..., torch.Tensor], scale: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """v = v_alone + scale (v_given - v_alone): the velocity with context pushed away from the
    velocity without it."""

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        free = alone(x, t)
        return free + scale * (given(x, t) - free)

    return velocity


def context_at(
    made: torch.Tensor | None, noise: Callable[[int], torch.Tensor], s: StreamSettings
) -> torch.Tensor | None:
    """The context as the model is given it: the frames ``made`` so far re-noised to
    ``s.context_time`` with the next frames of ``noise`` (as they are at 0; None stays None)."""
    if made is None or s.context_time <= 0:
        return made
    t = s.context_time
    return (1 - t) * made + t * noise(made.shape[2])


@torch.no_grad()
def stream_latents(
    model: torch.nn.Module,
    texts: TextFn,
    noise: Callable[[int], torch.Tensor],
    frames: int,
    window: int,
    s: StreamSettings,
    anchor: int = 0,
) -> Iterator[torch.Tensor]:
    """Latent chunks (B, C, chunk * pt, h, w) one after another until ``frames`` latent frames
    (time steps of the latent video, a multiple of the chunk's) are made.

    ``texts(frame)`` gives (caption, mask, empty caption, its mask) for the chunk starting at
    latent frame ``frame`` (a new prompt may start anywhere); ``noise(n)`` the next n frames of
    each video's own noise stream; ``window`` the context in latent frames (model's units of
    ``model.chunk``, times ``model.patch[0]`` here), after the video's first ``anchor``
    latent frames once the window has moved past them."""
    pt = model.patch[0]
    step, keep, first = model.chunk * pt, window * pt, anchor * pt
    made: torch.Tensor | None = None  # the context: the anchor, then the last window frames
    for start in range(0, frames, step):
        x = noise(step)
        x = sample_chunk(model, x, context_at(made, noise, s), texts(start), s)
        yield x
        made = x if made is None else torch.cat([made, x], dim=2)
        if made.shape[2] > first + keep:
            made = torch.cat([made[:, :, :first], made[:, :, -keep:]], dim=2)
