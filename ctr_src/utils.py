"""Seeding, device choice and parameter counts."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int = 2024) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) so a run can be repeated.

    On the CPU the book's models are then bit-for-bit reproducible for a given
    machine and thread count. cuDNN is asked for deterministic kernels too; a few
    CUDA reductions (e.g. ``index_add`` in embedding backward) may still differ in
    the last digits between runs on a GPU.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
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
