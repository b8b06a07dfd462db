"""Who am I in a run of several processes (torchrun, or a submitit job of several tasks), which
device is mine, and collective helpers."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def dist_info_from_env() -> DistInfo:
    """Rank and world size as torchrun sets them; without them, inside a submitit job of several
    tasks (``hydra/launcher=slurm`` with ``nodes`` / ``tasks_per_node``, or ``hydra/launcher=local``),
    submitit's view of the allocation. A plain run is rank 0 of 1."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return DistInfo(
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    return _from_submitit() or DistInfo()


def _from_submitit() -> DistInfo | None:
    """One submitit job of N tasks is one run of N ranks: submitit reads SLURM's (or its local
    executor's) variables, and exports the env:// ones ``init_process_group`` needs (master: the
    job's first host; port: from the job id, or ``MASTER_PORT`` if set)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):  # set by submitit in its jobs only
        return None
    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment()
    if env.world_size <= 1:
        return None
    env.export(set_cuda_visible_devices=False, overwrite=True)
    return DistInfo(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank)


def init_process_group(info: DistInfo, device: torch.device) -> None:
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
