"""Multi-process training on PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

Launch any training entry point under ``torchrun --nproc_per_node=N ...``: ``torchrun`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables; :func:`setup` reads them (only when called, never
at import), initialises the process group (NCCL on CUDA, gloo on CPU) and picks the process's device. Without
those variables everything runs as one process. The loops in :mod:`uslkit.train.loop` then wrap the model in
``DistributedDataParallel``, give each process its slice of every global batch
(:class:`uslkit.train.batches.StepStream`), average logged metrics over processes, and let rank 0 alone
write checkpoints, histories and final models.

Learner state that evolves during training (running means, memory banks, class counters) is updated from the
values of ALL processes so that every process holds the same state: :func:`mean_tensor` (all-reduced mean) and
:func:`gather_rows` (all-gathered rows in rank order). On one process both are exact no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["DistInfo", "setup", "barrier", "mean_over_processes", "broadcast_object", "dist_on", "mean_tensor",
           "gather_rows"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the ``torchrun`` process group when there is one.

    Args:
        device: the device chosen for a single process; with CUDA, process ``LOCAL_RANK`` uses GPU
            ``LOCAL_RANK``.

    Returns:
        ``(info, device)``. Single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``): ``DistInfo()`` and ``device``.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo(), device
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local), device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        torch.distributed.barrier()


def mean_over_processes(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Average a dict of floats over the processes (identity for one process)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def dist_on() -> bool:
    """A process group of more than one process is running (``torch.distributed`` initialised, world > 1)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def mean_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` (any shape) averaged element-wise over the processes; always a copy (``t`` itself is left as it is;
    one process: an exact copy)."""
    t = t.clone()
    if dist_on():
        torch.distributed.all_reduce(t)
        t /= torch.distributed.get_world_size()
    return t


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` ``(n, ...)`` of every process concatenated along dim 0 in rank order, ``(n W, ...)``: the rows of the
    global batch in its single-process order (process ``r`` holds rows ``[r n, (r + 1) n)``,
    :class:`uslkit.train.batches.StepStream`); ``t`` itself on one process. Every process must pass the same
    shape. No gradient flows through the gathered rows."""
    if not dist_on():
        return t
    parts = [torch.empty_like(t) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts)
