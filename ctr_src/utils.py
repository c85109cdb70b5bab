"""Seeding, device choice and parameter counts."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch import nn


#: cuBLAS workspace setting that makes its matrix products repeatable (NVIDIA's cuBLAS
#: docs, "Results reproducibility"; ``":16:8"`` is the other valid value, using less memory).
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def seed_everything(seed: int = 2024) -> None:
    """Seed every generator and ask PyTorch for deterministic kernels, so a run can be repeated.

    What it does:

    * seeds Python's ``random``, NumPy's global generator and PyTorch's generators on the CPU
      and on every GPU; sets ``PYTHONHASHSEED`` (it only reaches subprocesses started later:
      a running interpreter's string hashing is fixed at start-up);
    * ``torch.set_deterministic_debug_mode("warn")``, i.e.
      ``torch.use_deterministic_algorithms(True, warn_only=True)``: operations that have a
      deterministic variant use it (on CUDA, e.g., ``index_add``, ``scatter_add`` and the
      backward of ``index_select`` and ``gather``, which otherwise sum with atomic additions in
      a varying order); an operation with no deterministic CUDA kernel issues a ``UserWarning``
      naming itself instead of raising. ``ctr_src`` meets none of them: its pair layers read
      pairs without accumulating scatters (see :mod:`ctr_src.layers`) and ``nn.Embedding``'s
      CUDA backward sums duplicate rows in a fixed order;
    * sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless it is already set -- cuBLAS needs a
      fixed workspace configuration to repeat its matrix products bit for bit, and PyTorch
      reads the variable when the process makes its **first** cuBLAS call: a later change
      has no effect. Call ``seed_everything`` before anything runs on the GPU (the book's
      chapters call it first), or export the variable in the shell. It costs 32 MiB of GPU
      memory and is inert without a GPU;
    * ``torch.backends.cudnn.deterministic = True`` and ``benchmark = False`` (cuDNN's
      autotuner may pick a different algorithm each run).

    What is then reproducible:

    * **CPU**: runs with the same seed are bit-for-bit identical on the same machine, with the
      same PyTorch version, thread count and instruction set (``ATEN_CPU_CAPABILITY``). Across
      them, reductions and matrix products round differently, so trained numbers differ in
      the last digits and then drift apart a little (the chapters check trained values with
      tolerances for that reason);
    * **CUDA**: runs with the same seed are bit-for-bit identical on the same GPU model,
      driver, CUDA and PyTorch versions and batch sizes. A GPU run is *not* the CPU run:
      the initial weights (drawn on the CPU when a model is built, then moved) and the
      minibatch order (drawn on the CPU by :func:`ctr_src.train.fit` from its own ``seed``)
      are the same, but dropout masks (and any ``torch.rand*`` on the GPU) come from CUDA's
      own generator, so a GPU run trains like a CPU run with another seed -- and the float
      rounding differs anyway.

    What remains nondeterministic: any operation PyTorch has no deterministic CUDA kernel for
    (the warning names it; none in ``ctr_src``), results across GPU models or library versions,
    code that writes into overlapping memory, and generators this function does not know
    about (e.g. a ``torch.Generator`` created by the caller, or other libraries' own seeds).

    Cost: nothing measurable on the CPU (the flag changes only a few CPU kernels, such as
    ``index_put(accumulate=True)``, which becomes serial; new ``torch.empty`` memory is filled,
    see ``torch.utils.deterministic.fill_uninitialized_memory``); on the GPU the deterministic
    variants of scatter-type operations are slower, which is why ``ctr_src`` avoids them.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds the CPU and every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    # = torch.use_deterministic_algorithms(True, warn_only=True), without that function's
    # import of torch._inductor (seconds; it only matters to torch.compile)
    torch.set_deterministic_debug_mode("warn")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def default_device() -> torch.device:
    """CUDA when a GPU is visible, otherwise the CPU (override with ``CTR_DEVICE``)."""
    forced = os.environ.get("CTR_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
