"""One trainer for every model: ``fit``, ``evaluate``, ``predict``.

``fit`` minimises ``BCEWithLogitsLoss`` with Adam on minibatches of a
:class:`~ctr_src.data.TensorData`, evaluates AUC and logloss on the validation set after
every epoch, stops early when validation AUC has not improved for ``patience`` epochs and
**always restores the weights of the best epoch** before returning the history.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from . import metrics
from .data.tensors import TensorData


@dataclass
class History:
    """Per-epoch records of a :func:`fit` run and where the best epoch was."""

    records: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def column(self, name: str) -> list:
        return [r[name] for r in self.records]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records).set_index("epoch")

    @property
    def best(self) -> dict:
        """The record of the best epoch (the weights the model holds after ``fit``)."""
        return next(r for r in self.records if r["epoch"] == self.best_epoch)

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean(self.column("seconds"))) if self.records else float("nan")


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_data(data: TensorData, name: str) -> None:
    if not isinstance(data, TensorData):
        raise TypeError(f"{name} must be a ctr_src.data.TensorData, got {type(data).__name__}")
    for key in ("fields", "label"):
        if key not in data:
            raise KeyError(f"{name} has no {key!r} tensor (has {sorted(data.keys())})")
    if len(data) == 0:
        raise ValueError(f"{name} is empty")


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int = 8192) -> torch.Tensor:
    """Logits ``(N,)`` of every row, on the CPU, in eval mode (the mode is restored)."""
    _check_data(data, "data") if "label" in data else None
    was_training = model.training
    model.eval()
    device = model_device(model)
    out = [model({k: v.to(device) for k, v in b.items()}).float().cpu()
           for b in data.batches(batch_size)]
    model.train(was_training)
    return torch.cat(out)


def predict_proba(model: nn.Module, data: TensorData, batch_size: int = 8192) -> np.ndarray:
    """Click probabilities ``sigmoid(logit)`` of every row as a NumPy array."""
    return torch.sigmoid(predict(model, data, batch_size)).numpy()


def evaluate(model: nn.Module, data: TensorData, batch_size: int = 8192,
             gauc: bool = False) -> dict[str, float]:
    """AUC and logloss (and GAUC over ``data["user"]`` if ``gauc=True``) of ``model`` on ``data``."""
    _check_data(data, "data")
    logits = predict(model, data, batch_size)
    labels = data["label"].cpu().numpy()
    out = {"auc": metrics.auc(labels, logits.numpy()),
           "logloss": metrics.logloss(labels, torch.sigmoid(logits).numpy())}
    if gauc:
        if "user" not in data:
            raise KeyError("GAUC needs a 'user' tensor in the data to group by")
        out["gauc"] = metrics.gauc(labels, logits.numpy(), data["user"].cpu().numpy())
    return out


def fit(model: nn.Module, train: TensorData, valid: TensorData, *, epochs: int = 10,
        batch_size: int = 1024, lr: float = 1e-3, weight_decay: float = 0.0, patience: int = 2,
        min_delta: float = 0.0, seed: int = 2024, device=None, progress: bool = True,
        gauc: bool = False, optimizer: Callable | None = None) -> History:
    """Train ``model`` on ``train``; early-stop on validation AUC; restore the best weights.

    * ``epochs``: the most epochs to run; ``patience``: epochs without a validation-AUC gain
      larger than ``min_delta`` before stopping;
    * ``seed``: seeds the minibatch order (seed the model's initialisation yourself with
      :func:`ctr_src.utils.seed_everything` before building it);
    * ``device``: where to train (default: where the model is); the data is moved there;
    * ``optimizer``: a factory ``params -> torch.optim.Optimizer`` (default Adam).

    Returns a :class:`History` with, per epoch, ``train_loss``, ``valid_auc``,
    ``valid_logloss`` (and ``valid_gauc``), and ``seconds`` of training.
    """
    _check_data(train, "train")
    _check_data(valid, "valid")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    train, valid = train.to(device), valid.to(device)
    opt = optimizer(model.parameters()) if optimizer else torch.optim.Adam(
        model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    history = History()
    best_auc, best_state, wait = -np.inf, None, 0
    bar = tqdm(range(1, epochs + 1), desc=type(model).__name__, disable=not progress,
               file=sys.stderr, leave=True, dynamic_ncols=False, ncols=100)
    for epoch in bar:
        model.train()
        start = time.perf_counter()
        total, count = 0.0, 0
        for batch in train.batches(batch_size, shuffle=True, generator=gen):
            opt.zero_grad(set_to_none=True)
            logits = model(batch)
            loss = loss_fn(logits, batch["label"].to(logits.dtype))
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch["label"])
            count += len(batch["label"])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        scores = evaluate(model, valid, gauc=gauc)
        record = {"epoch": epoch, "train_loss": total / count, "valid_auc": scores["auc"],
                  "valid_logloss": scores["logloss"], "seconds": seconds}
        if gauc:
            record["valid_gauc"] = scores["gauc"]
        history.records.append(record)
        if scores["auc"] > best_auc + min_delta or best_state is None:
            best_auc, wait = scores["auc"], 0
            history.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            wait += 1
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", auc=f"{scores['auc']:.4f}")
        if wait >= patience:
            history.stopped_early = epoch < epochs
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return history
