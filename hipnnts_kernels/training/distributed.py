"""Multi-process training through ``torchrun`` and ``torch.distributed`` (DistributedDataParallel).

Under ``torchrun --nproc-per-node K hipnnts train ...`` every process reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment, joins the NCCL group (GPUs) or the gloo
group (CPU), and trains on its own shard of every epoch's batches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Process:
    """This process's place in the run: rank, world size and device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce(self, tensor: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
        """Reduce ``tensor`` in place over the processes (a no-op in a single process)."""
        if self.distributed:
            dist.all_reduce(tensor, op=op)
        return tensor

    def all_gather(self, tensor: Tensor) -> Tensor:
        """(world_size, *shape): every process's ``tensor``."""
        if not self.distributed:
            return tensor[None].clone()
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every process."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(value, 0)
        return bool(value.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def resolve_device(name: str) -> torch.device:
    """'auto' is the GPU when one is present, else the CPU; anything else is checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but torch sees no CUDA GPU (torch {torch.__version__})")
    return device


def start(device: str) -> Process:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Process(0, 1, resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return Process(rank, world_size, chosen)


def stop(process: Process) -> None:
    """Leave the process group."""
    if process.distributed and dist.is_initialized():
        dist.destroy_process_group()
