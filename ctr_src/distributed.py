"""Data-parallel training with ``torchrun``: the process group's few helpers.

``torchrun --nproc_per_node=N script.py`` starts ``N`` copies of ``script.py``
and gives each the environment variables ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. A script that trains with
:func:`ctr_src.train.fit` needs one more line::

    with ctr_src.distributed.process_group():
        history = fit(model, train, valid, batch_size=1024)

Inside, :func:`~ctr_src.train.fit` sees the process group and trains with
``DistributedDataParallel``: every rank takes its share of each global batch
of ``batch_size`` rows and the gradients are averaged, so the update is the
one-process update on the whole global batch (see :func:`ctr_src.train.fit`).
Run without ``torchrun``, :func:`process_group` does nothing and the script
trains in one process, as before.

The backend is ``gloo`` on the CPU and ``nccl`` when CUDA is visible; with
``nccl`` each process uses the GPU ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Iterator

import torch
from torch import distributed as dist

#: the variables torchrun sets that :func:`setup` needs
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("gloo", "nccl")


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and without a process group): the one that writes."""
    return rank() == 0


def launched() -> bool:
    """True when the environment says torchrun started this process.

    Raises ``ValueError`` when only some of :data:`ENV_VARS` are set.
    """
    return bool(_env())


def _env() -> dict[str, str]:
    """torchrun's variables, all or none; half of them is an error."""
    found = {k: os.environ[k] for k in ENV_VARS if os.environ.get(k)}
    if found and len(found) < len(ENV_VARS):
        missing = [k for k in ENV_VARS if k not in found]
        raise ValueError(
            f"the environment sets {', '.join(sorted(found))} but not "
            f"{', '.join(missing)}: launch with torchrun "
            "(torchrun --nproc_per_node=N script.py sets all of "
            f"{', '.join(ENV_VARS)}), or unset them to run one process")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        if k in found and not found[k].isdigit():
            raise ValueError(f"{k}={found[k]!r} is not a non-negative "
                             "integer; launch with torchrun, which sets it")
    if found:
        r, n = int(found["RANK"]), int(found["WORLD_SIZE"])
        if n < 1 or r >= n:
            raise ValueError(
                f"RANK={r} and WORLD_SIZE={n}: the rank must be in "
                f"0..WORLD_SIZE-1; launch with torchrun, which sets both")
    return found


def default_backend() -> str:
    """``"nccl"`` when CUDA is visible, else ``"gloo"``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def setup(backend: str | None = None,
          timeout: datetime.timedelta | None = None) -> None:
    """Join the process group torchrun's environment describes.

    ``backend``: ``"gloo"`` (CPU) or ``"nccl"`` (CUDA); default
    :func:`default_backend`. With ``nccl`` this process's current CUDA
    device becomes ``cuda:LOCAL_RANK``, so ``default_device()`` and
    ``model.to("cuda")`` put each process on its own GPU. ``timeout``: how
    long a collective waits for the other ranks (PyTorch's default if
    ``None``). Raises ``ValueError`` (the variables missing or half-set, an
    unknown backend, ``nccl`` without enough GPUs) and ``RuntimeError`` if a
    process group is initialised already.
    """
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; "
                           "install a build with it to train on several "
                           "processes")
    if is_distributed():
        raise RuntimeError("a torch.distributed process group is initialised "
                           "already; call ctr_src.distributed.cleanup() "
                           "first, or use the group you have")
    env = _env()
    if not env:
        raise ValueError(
            f"none of {', '.join(ENV_VARS)} is set, so this process was not "
            "started by torchrun: launch it with "
            "torchrun --nproc_per_node=N script.py, or use "
            "ctr_src.distributed.process_group(), which runs one process "
            "without them")
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    local = int(env["LOCAL_RANK"])
    if backend == "nccl":
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if local >= n_gpus:
            raise ValueError(
                f"backend 'nccl' on LOCAL_RANK={local} needs GPU {local}, but "
                f"{n_gpus} CUDA GPU(s) are visible: start at most {n_gpus} "
                "processes per node (--nproc_per_node), or use "
                "backend='gloo' to train on the CPU")
        torch.cuda.set_device(local)
    kwargs = {} if timeout is None else {"timeout": timeout}
    # init_method env:// reads RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
    dist.init_process_group(backend=backend, init_method="env://", **kwargs)


def cleanup() -> None:
    """Leave the process group (nothing to do without one)."""
    if is_distributed():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(backend: str | None = None,
                  timeout: datetime.timedelta | None = None) -> Iterator[bool]:
    """:func:`setup` under torchrun, :func:`cleanup` on the way out.

    Yields ``True`` when it joined a process group, ``False`` when the
    process was not started by torchrun (then it does nothing, and ``fit``
    trains in this one process). A group initialised before is used as it
    is and left alone.
    """
    if is_distributed():
        yield True
        return
    if not launched():
        yield False
        return
    setup(backend, timeout)
    try:
        yield True
    finally:
        cleanup()
