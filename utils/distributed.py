"""Everything that depends on the device or on the process group, in one place.

The runner is written for ``torchrun`` from the start: one process per device, rank 0 writes. On a single
process every helper here degrades to the identity, so the same code path runs everywhere.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available (the process's local GPU under torchrun), else CPU."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ValueError(f"unknown device '{name}' (run.device or --device): use auto, cpu, cuda or cuda:N")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and torch.cuda.is_available():
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' was asked for but CUDA is not available here; use --device cpu")
    return device


def setup(device_name: str = "auto") -> DistInfo:
    """Join the torchrun process group if the environment names one (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank, local_rank, dist.get_world_size() if dist.is_initialized() else 1, device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def main_process_first():
    """Rank 0 runs the block first (generating data, building caches); the others run it after, reusing that."""
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    if not is_main:
        barrier()
    yield
    if is_main:
        barrier()


def _all_gather_cat(tensor: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate ``tensor`` from every rank along dim 0 (ranks may hold different row counts)."""
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    parts = [tensor.new_empty((n, *tensor.shape[1:])) for n in sizes]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts), sizes


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every rank and returns this rank's slice.

    Every rank computes the same global loss, so summing gives ``world_size`` times the true gradient of
    the local slice, which DDP's averaging divides back out: N processes with batch B train exactly like
    one process with batch N*B.
    """

    @staticmethod
    def forward(ctx, tensor):
        out, ctx.sizes = _all_gather_cat(tensor)
        ctx.local = tensor.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[:dist.get_rank()])
        return grad[start:start + ctx.local]


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` over ranks along dim 0 (ranks in order); gradients flow to the local slice."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return tensor
    if tensor.requires_grad:
        return _GatherWithGrad.apply(tensor)
    return _all_gather_cat(tensor)[0]


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``tensor`` on every process (in place); the identity on one process."""
    if dist.is_initialized():
        dist.broadcast(tensor, src=src)
    return tensor
