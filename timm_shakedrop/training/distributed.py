"""Helpers for training under torchrun: collective flags and per-rank generator states.

Process-group set-up, rank queries, loss reduction and BN statistics come from `timm.utils`
(`init_distributed_device`, `is_primary`, `reduce_tensor`, `distribute_bn`).
"""
from typing import Any, List

import torch
import torch.distributed as dist

__all__ = ['all_gather_objects', 'any_rank_true', 'check_sync_bn_supported', 'init_device']


def any_rank_true(flag: bool, distributed: bool, device: torch.device) -> bool:
    """Return True on every rank when `flag` is True on at least one rank (a collective call under DDP)."""
    if not distributed:
        return bool(flag)
    # gloo reduces CPU tensors, nccl CUDA tensors: use the training device.
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def all_gather_objects(obj: Any, distributed: bool) -> List[Any]:
    """Return the list of `obj` from every rank, in rank order (a collective call under DDP)."""
    if not distributed:
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def check_sync_bn_supported(sync_bn: bool, device: torch.device) -> None:
    """Reject `--sync-bn` where torch's SyncBatchNorm cannot run: it needs CUDA tensors.

    Raises:
        ValueError: for `--sync-bn` on any device but CUDA.
    """
    if sync_bn and device.type != 'cuda':
        raise ValueError(
            f'--sync-bn needs CUDA: torch.nn.SyncBatchNorm does not run on {device.type} tensors. '
            f'Leave it out; --dist-bn reduce (the default) averages the BN statistics across ranks after '
            f'each epoch instead.')


def init_device(args) -> torch.device:
    """Set `args.device`, `distributed`, `world_size`, `rank` and `local_rank`, and return the device.

    timm's `init_distributed_device` starts the process group from the torchrun environment. When the
    caller has already started it, the existing group is used instead of starting a second one.
    """
    import os

    from timm.utils import init_distributed_device

    if not (dist.is_available() and dist.is_initialized()):
        return init_distributed_device(args)
    args.distributed = True
    args.world_size = dist.get_world_size()
    args.rank = dist.get_rank()
    args.local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if args.device.startswith('cuda'):
        args.device = f'cuda:{args.local_rank}'
        torch.cuda.set_device(args.device)
    return torch.device(args.device)
