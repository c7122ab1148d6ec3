"""Data-parallel capture on ``torch.distributed``: who counts which chunks, and the sum.

Each language's ``B`` batches (cut as a one-process run cuts them) are dealt out in
contiguous blocks, part ``p`` of ``P`` taking batches ``[p*B // P, (p+1)*B // P)``. Every
chunk thus runs in the same batch as in one process, so the parts' counts add up to the
one-process counts bit for bit. A part is recorded as a chunk interval ``[start, stop)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def env_world_size() -> int:
    """``WORLD_SIZE`` of the launcher (1 when not launched by torchrun/accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """``RANK`` of this process as set by the launcher (0 when not launched)."""
    return int(os.environ.get("RANK", "0"))


def local_device() -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_from_env() -> tuple[int, int]:
    """``(rank, world_size)``, initialising the process group from the launcher if needed.

    With ``WORLD_SIZE > 1`` and no group yet, one is initialised (``nccl`` with CUDA, else
    ``gloo``) and left for later calls; without a launcher, ``(0, 1)``.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if env_world_size() <= 1:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    log.info("rank %d of %d joined the %s process group", rank, world, backend)
    return rank, world


def barrier() -> None:
    """Waits until every rank gets here."""
    dist.barrier()


def shard_range(n_chunks: int, batch_size: int, part: int, parts: int) -> tuple[int, int]:
    """Chunks ``[start, stop)`` that part ``part`` of ``parts`` counts (whole batches).

    Args:
        n_chunks: Chunks of the language.
        batch_size: Chunks per forward pass.
        part: Index of the part, ``0 <= part < parts``.
        parts: Number of parts (ranks x machines).
    """
    n_batches = -(-n_chunks // batch_size)
    lo, hi = part * n_batches // parts, (part + 1) * n_batches // parts
    return min(lo * batch_size, n_chunks), min(hi * batch_size, n_chunks)


def check_shardable(n_chunks: Mapping[str, int], batch_size: int, parts: int, what: str) -> None:
    """Refuses a split that would leave a part without a batch of some language.

    Args:
        n_chunks: ``{lang: chunks}``.
        batch_size: Chunks per forward pass.
        parts: Number of parts.
        what: How the parts came about, for the message (e.g. ``"4 ranks"``).

    Raises:
        ValueError: Naming the language, its chunks and batches, and what to change.
    """
    for lang, n in n_chunks.items():
        n_batches = -(-n // batch_size)
        if n_batches < parts:
            raise ValueError(
                f"cannot split language {lang!r} over {what}: it has {n} chunks = {n_batches} "
                f"batches of batch_size {batch_size}, and every part needs at least one batch. "
                f"Use at most {n_batches} parts, a batch_size of at most {max(1, n // parts)}, "
                "or more tokens per language."
            )


def all_reduce_sum(tensors: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Sums each tensor over all ranks (``None`` stays ``None``); results are on the CPU."""
    device = local_device() if dist.get_backend() == "nccl" else torch.device("cpu")
    out = []
    for t in tensors:
        if t is not None:
            t = t.to(device, copy=True)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t = t.cpu()
        out.append(t)
    return out


def same_on_all_ranks(value: object, what: str) -> None:
    """Raises ``ValueError`` on every rank if ``value`` (JSON-able) differs between ranks."""
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    differ = [r for r, v in enumerate(gathered) if v != gathered[0]]
    if differ:
        raise ValueError(
            f"the ranks disagree on {what}: rank 0 has {gathered[0]!r}, rank {differ[0]} has "
            f"{gathered[differ[0]]!r}; launch every rank with the same arguments"
        )
