"""torchrun plumbing: process group, collectives the trainer needs, DDP or FSDP wrapping.

Every helper is a no-op for a single process, so the trainer reads the same either way. Under
FSDP (torch's ``fully_shard``) every forward is a collective: all ranks must run the same number
of them, which is why generation asks all ranks before it stops early (:meth:`Dist.all_done`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


class Dist:
    """This process's place in the run: rank, world size, device, and small collectives."""

    def __init__(self) -> None:
        self.rank, self.world = 0, 1
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_mean(self, x: Tensor) -> Tensor:
        if self.world > 1:
            x = x.clone()
            dist.all_reduce(x)
            x /= self.world
        return x

    def all_sum(self, x: Tensor) -> Tensor:
        if self.world > 1:
            x = x.clone()
            dist.all_reduce(x)
        return x

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any."""
        if self.world == 1:
            return flag
        x = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return bool(x.item())

    def all_done(self, done: Tensor) -> bool:
        """Generation may stop once every row of every rank has stopped."""
        return not self.any(not bool(done.all()))

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def shard(module: nn.Module) -> None:
    """FSDP2 on a Hugging Face model: one unit per transformer block, then the model itself.

    The blocks are the classes the model names in ``_no_split_modules``. Each model is its own
    root, so it can be called alone (generation calls the LM without the value head).
    """
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(module, "_no_split_modules", None) or [])
    for sub in module.modules():
        if type(sub).__name__ in blocks:
            fully_shard(sub)
    fully_shard(module)


def wrap_for_training(policy: nn.Module, mode: str, world: int) -> nn.Module:
    """The module the training forward calls: the policy itself, DDP around it, or (FSDP) the
    policy whose LM, critic and value head were sharded in place."""
    if world == 1:
        return policy
    if mode == "ddp":
        return nn.parallel.DistributedDataParallel(policy)
    for name in ("lm", "critic", "value_head"):
        part = getattr(policy, name)
        if part is not None:
            shard(part)
    return policy


@contextlib.contextmanager
def no_grad_sync(model: nn.Module, last: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a minibatch."""
    if last or not isinstance(model, nn.parallel.DistributedDataParallel):
        yield
        return
    with model.no_sync():
        yield


def full_state_dict(module: nn.Module, sharded: bool) -> dict[str, Tensor] | None:
    """The whole state dict on rank 0 (None elsewhere); a collective when sharded."""
    if not sharded:
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(module, options=options)
    return state if dist.get_rank() == 0 else None


def optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, sharded: bool) -> Any:
    if not sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(module, optimizer, options=options)


def load_optimizer_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, state: Any, sharded: bool
) -> None:
    if not sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_optimizer_state_dict(module, optimizer, optim_state_dict=state, options=options)
