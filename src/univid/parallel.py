"""torch.distributed for training: process groups, and DDP / FSDP2 applied from outside the model.

The model files know nothing of this module. :func:`parallelize` follows torchtitan's build
order: the network is built on the ``meta`` device, activation checkpointing and
``torch.compile`` are applied per block, FSDP2 ``fully_shard`` wraps each block and then the
root, the shards are materialised with ``to_empty`` and filled with rank 0's seeded
initialisation, and only then is the optimizer built (by the caller). A one-process run builds
the same initialisation, so every mode starts from identical weights.
"""

from __future__ import annotations

import copy
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from univid.config import Config
from univid.device import pick_device
from univid.errors import ConfigError
from univid.lora import network
from univid.speed import blocks_of, prepare_blocks


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank, world size, device and parallel mode."""

    mode: str = "none"
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """True on the rank that logs, draws progress bars and writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.mode != "none":
            dist.barrier()

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum of ``value`` over ranks (a collective; ``value`` itself on one rank)."""
        if self.mode == "none" or self.world == 1:
            return value
        out = value.to(self.device).clone()
        dist.all_reduce(out)
        return out.to(value.device)


def torchrun_world() -> int:
    """Number of processes torchrun started (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def torchrun_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def init_distributed(cfg: Config) -> Dist:
    """Join the process group torchrun prepared (or make a one-process group) for ``cfg``."""
    mode, world = cfg.parallel.mode, torchrun_world()
    device = pick_device(cfg.train.device)
    if mode == "none":
        if world > 1:
            raise ConfigError(
                f"parallel.mode='none' is invalid under torchrun with {world} processes: "
                "set parallel.mode=ddp or parallel.mode=fsdp"
            )
        return Dist(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = cfg.parallel.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("parallel.backend='nccl' is invalid on CPU: use gloo or train on CUDA")
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=cfg.parallel.timeout_s)
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend, timeout=timeout)
        else:  # one process without torchrun: a private in-memory rendezvous
            dist.init_process_group(
                backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
            )
    return Dist(mode, dist.get_rank(), dist.get_world_size(), local_rank, device)


def close_distributed(info: Dist) -> None:
    if info.mode != "none" and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (other modules are returned as they are)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _fully_shard(model: nn.Module, cfg: Config, amp: torch.dtype | None) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # Inputs keep their dtype (t and the RoPE angles need fp32); autocast picks compute dtypes.
    root = MixedPrecisionPolicy(cast_forward_inputs=False)
    policy = root
    if amp is not None:  # bf16 all-gathers and compute, fp32 master weights and reductions
        policy = MixedPrecisionPolicy(
            param_dtype=amp, reduce_dtype=torch.float32, cast_forward_inputs=False
        )
    for block in blocks_of(model):
        fully_shard(
            block, mp_policy=policy, reshard_after_forward=cfg.parallel.reshard_after_forward
        )
    # The few weights outside the blocks stay fp32: the caption's LayerNorm sees fp32 inputs,
    # and a CPU LayerNorm refuses a bf16 weight with them (autocast still runs the linears bf16).
    fully_shard(model, mp_policy=root)


def _sharded_copy(
    cfg: Config, info: Dist, amp: torch.dtype | None, init: nn.Module | None, prepare: bool
) -> nn.Module:
    """A fully_shard-ed network whose shards hold rank 0's ``init`` weights."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    model = network(cfg, meta=True)
    if prepare:
        prepare_blocks(model, cfg.train.activation_checkpointing, cfg.train.compile, amp)
    _fully_shard(model, cfg, amp)
    model.to_empty(device=info.device)
    set_model_state_dict(
        model,
        init.state_dict() if init is not None else {},
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
    )
    return model


def parallelize(
    cfg: Config, info: Dist, amp: torch.dtype | None = None
) -> tuple[nn.Module, nn.Module]:
    """(the module to train, its EMA copy) for ``cfg.parallel.mode``, seeded by the caller.

    ``none`` and ``ddp`` keep whole weights on every rank; ``fsdp`` shards the trained weights
    and the EMA weights alike, one shard per rank. A fine-tuning run (``lora.base``) starts from
    its base's weights, with its adapters when it has them (:func:`univid.lora.network`)."""
    t = cfg.train
    if info.mode == "fsdp":
        init = network(cfg) if info.main else None
        model = _sharded_copy(cfg, info, amp, init, prepare=True)
        # The EMA gathers fp32 weights: it is what validation and sampling run in full precision.
        ema = _sharded_copy(cfg, info, None, init, prepare=False)
        return model, ema.requires_grad_(False).eval()
    model = network(cfg).to(info.device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    prepare_blocks(model, t.activation_checkpointing, t.compile, amp)
    if info.mode == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model, ema


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor, or the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
