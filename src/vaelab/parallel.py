"""Data-parallel training and evaluation across processes started by `torchrun`.

`torchrun --nproc-per-node N -m vaelab train ...` starts N processes; each reads its rank
from the environment, joins a process group (gloo on CPU, NCCL on GPU), takes its share of
every batch, and averages gradients with the others. Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import VaelabError


class ParallelError(VaelabError, RuntimeError):
    """A collective operation failed: another process of the run stopped or cannot be reached."""


@dataclass
class Parallel:
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n items (the first n % world ranks take one more)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over all ranks, in place."""
        if self.active:
            self._collective(dist.all_reduce, tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Replace each gradient by its sum over ranks, in one flat all-reduce."""
        if not self.active:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._collective(dist.all_reduce, flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's 1-D tensor, in rank order (lengths may differ)."""
        if not self.active:
            return tensor
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(self.world)]
        self._collective(dist.all_gather, sizes, torch.tensor([len(tensor)], device=tensor.device))
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=tensor.dtype, device=tensor.device)
        padded[:len(tensor)] = tensor
        parts = [torch.zeros_like(padded) for _ in range(self.world)]
        self._collective(dist.all_gather, parts, padded)
        return torch.cat([p[:int(s.item())] for p, s in zip(parts, sizes)])

    def barrier(self) -> None:
        if self.active:
            self._collective(dist.barrier)

    def _collective(self, function, *args, **kwargs) -> None:
        try:
            function(*args, **kwargs)
        except (RuntimeError, dist.DistError) as err:
            raise ParallelError(f"rank {self.rank} of {self.world}: another process of this run stopped or "
                                f"cannot be reached ({str(err).splitlines()[0]}); stopping too") from None


def from_environment(device: torch.device) -> tuple[Parallel, torch.device]:
    """Join the process group that torchrun describes in the environment, if any.

    Returns the rank/world and the device this rank should use (its own GPU under NCCL).
    The timeout (VAELAB_DIST_TIMEOUT seconds, default 300) bounds how long a rank waits for
    one that has died before it stops with ParallelError instead of hanging.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Parallel(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get("VAELAB_DIST_TIMEOUT", "300")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return Parallel(rank, world), device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
