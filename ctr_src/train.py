"""One trainer for every model: ``fit``, ``evaluate``, ``predict``.

``fit`` minimises ``BCEWithLogitsLoss`` with Adam on minibatches of a
:class:`~ctr_src.data.TensorData`, evaluates AUC and logloss on the validation set after
every epoch, stops early when validation AUC has not improved for ``patience`` epochs and
**always restores the weights of the best epoch** before returning the history.

The trainer fails loudly and loses nothing:

* labels are checked once per call at the boundary (``fit``: train and valid; ``evaluate``):
  they must be finite 0/1 clicks, else a ``ValueError`` says which data set, how many labels
  are bad, shows one and says how to fix it;
* a non-finite training loss raises :class:`TrainingDiverged` at the batch where it appears
  (non-finite validation scores after an epoch raise it too), saying what to try;
* whatever stops ``fit`` (divergence, an error in the model, ``KeyboardInterrupt``), the model
  is left with its last good weights -- the best epoch's if an epoch has finished, else the
  weights it had when ``fit`` was called -- and the history so far is attached to the
  exception as ``.history`` before it propagates.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional as nnf
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import distributed, metrics
from .data.tensors import TensorData
from .layers import skip_index_checks


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
    if p is None:  # a model of statistics only (e.g. MeanBaseline): where its buffers are
        p = next(model.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


class TrainingDiverged(RuntimeError):
    """:func:`fit` met a non-finite training loss (or non-finite validation scores).

    ``epoch`` and ``batch`` (both counted from 1; ``batch`` is ``None`` when the validation
    scores were the first to go non-finite) say where, ``loss`` is the offending loss value
    (``None`` for validation scores) and ``history`` the :class:`History` of the epochs that
    finished. When it propagates, the model already holds its last good weights.
    """

    def __init__(self, message: str, *, epoch: int, batch: int | None = None,
                 loss: float | None = None):
        super().__init__(message)
        self.epoch, self.batch, self.loss = epoch, batch, loss
        self.history: History | None = None


class _NonFiniteScores(ValueError):
    """Raised by :func:`_evaluate`; callers turn it into their own error."""

    def __init__(self, n_bad: int, n: int, example: float):
        super().__init__(f"{n_bad} of {n} scores are not finite (e.g. {example})")
        self.n_bad, self.n, self.example = n_bad, n, example


def _check_data(data: TensorData, name: str) -> None:
    if not isinstance(data, TensorData):
        raise TypeError(f"{name} must be a ctr_src.data.TensorData, got {type(data).__name__}")
    for key in ("fields", "label"):
        if key not in data:
            raise KeyError(f"{name} has no {key!r} tensor (has {sorted(data.keys())})")
    if len(data) == 0:
        raise ValueError(f"{name} is empty")


def _check_labels(data: TensorData, name: str) -> None:
    """Every label of ``data`` must be a finite 0 or 1 (one vectorised pass, on its device)."""
    y = data["label"]
    bad = ~((y == 0) | (y == 1))  # NaN and inf compare unequal to both, so they count as bad
    n_bad = int(bad.sum())  # the only host sync, and it is one per call
    if n_bad:
        example = y[bad][:1].item()
        raise ValueError(
            f"{name} has {n_bad} of {len(y)} labels that are not 0 or 1 (e.g. {example!r}). "
            "Labels must be 0/1 clicks: binarise ratings first, e.g. "
            "label = (rating >= 4).float(), and drop or fill rows whose label is NaN.")


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int = 8192) -> torch.Tensor:
    """Logits ``(N,)`` of every row, on the CPU, in eval mode (the mode is restored)."""
    _check_data(data, "data") if "label" in data else None
    checked = _check_inputs(model, data, "data")
    was_training = model.training
    model.eval()
    device = model_device(model)
    with skip_index_checks() if checked else contextlib.nullcontext():
        out = [model({k: v.to(device) for k, v in b.items()}).float().cpu()
               for b in data.batches(batch_size)]
    model.train(was_training)
    return torch.cat(out)


def _check_inputs(model: nn.Module, data: TensorData, name: str) -> bool:
    """Validate ``data``'s indices once for a book model; ``False`` for other models.

    A :class:`~ctr_src.models.CTRModel` checks the whole data set in one pass
    (``check_inputs``), after which its batches can skip the per-call scans; any other
    module keeps its own checks.
    """
    check = getattr(model, "check_inputs", None)
    if not callable(check):
        return False
    check(data.tensors, name)
    return True


def predict_proba(model: nn.Module, data: TensorData, batch_size: int = 8192) -> np.ndarray:
    """Click probabilities ``sigmoid(logit)`` of every row as a NumPy array."""
    return torch.sigmoid(predict(model, data, batch_size)).numpy()


def _evaluate(model: nn.Module, data: TensorData, batch_size: int,
              gauc: bool) -> dict[str, float]:
    """:func:`evaluate` without the label check; raises ``_NonFiniteScores``."""
    logits = predict(model, data, batch_size)  # validates data's indices once
    finite = torch.isfinite(logits)
    if not bool(finite.all()):
        bad = logits[~finite]
        raise _NonFiniteScores(len(bad), len(logits), bad[0].item())
    labels = data["label"].cpu().numpy()
    out = {"auc": metrics.auc(labels, logits.numpy()),
           "logloss": metrics.logloss(labels, torch.sigmoid(logits).numpy())}
    if gauc:
        if "user" not in data:
            raise KeyError("GAUC needs a 'user' tensor in the data to group by")
        out["gauc"] = metrics.gauc(labels, logits.numpy(), data["user"].cpu().numpy())
    return out


def evaluate(model: nn.Module, data: TensorData, batch_size: int = 8192,
             gauc: bool = False) -> dict[str, float]:
    """AUC and logloss (and GAUC over ``data["user"]`` if ``gauc=True``) of ``model``.

    Raises ``ValueError`` if a label of ``data`` is not a finite 0 or 1, or if the model
    scores a row NaN or infinite (its weights or inputs are not finite).
    """
    _check_data(data, "data")
    _check_labels(data, "data")
    try:
        return _evaluate(model, data, batch_size, gauc)
    except _NonFiniteScores as exc:
        raise ValueError(
            f"the model's scores on data are not all finite: {exc}. Its weights or inputs "
            "hold NaN/inf (check torch.isfinite on model.parameters() and on data['fields']); "
            "if they came from training, retrain with a lower learning rate.") from None


def _divergence_advice(lr: float, custom_optimizer: bool) -> str:
    rate = ("the learning rate of your optimizer" if custom_optimizer
            else f"the learning rate (lr={lr:g} now; try lr={lr / 10:g})")
    return (f"Try lowering {rate}; check the inputs for NaN/inf or extreme values and the "
            "weight decay; or clip the gradients (torch.nn.utils.clip_grad_norm_).")


def _cpu_state(model: nn.Module) -> dict:
    """A copy of ``model.state_dict()`` on the CPU (no extra accelerator memory)."""
    state = model.state_dict()
    out = type(state)((k, v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor)
                       else copy.deepcopy(v)) for k, v in state.items())
    if hasattr(state, "_metadata"):
        out._metadata = copy.deepcopy(state._metadata)
    return out


def _restore_after_failure(exc: BaseException, model: nn.Module, state: dict, what: str,
                           mode: bool, history: History) -> None:
    """Load ``state`` into ``model``, set its mode and attach ``history`` to ``exc``."""
    try:
        model.load_state_dict(state)
        model.train(mode)
        note = f"ctr_src.train.fit restored {what}"
    except Exception as err:  # e.g. a CUDA error that left the device unusable
        note = f"ctr_src.train.fit could NOT restore {what}: {type(err).__name__}: {err}"
    try:
        exc.history = history
        note += "; the history of the finished epochs is attached as .history"
    except (AttributeError, TypeError):  # an exception type that takes no attributes
        pass
    if hasattr(exc, "add_note"):  # Python 3.11+: shown under the traceback
        exc.add_note(note)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _check_amp(amp: str | None) -> None:
    if amp is not None and amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None or one of {sorted(AMP_DTYPES)}, got {amp!r} "
                         "(bf16 needs no loss scaling; fp16 is for GPUs without bf16)")


def adam(model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0,
         fused: bool | None = None) -> torch.optim.Adam:
    """:func:`fit`'s default optimiser for ``model`` (call it once the model is on its
    device): Adam, with PyTorch's fused kernel (one pass over all the parameters) where
    it has one for every parameter -- CPU or CUDA, floating point -- unless ``fused`` says.
    """
    params = list(model.parameters())
    if fused is None:
        trained = [p for p in params if p.requires_grad]
        fused = bool(trained) and len({p.device.type for p in trained}) == 1 and all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in trained)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)


def _autocast(device: torch.device, amp: str | None):
    """The forward pass's autocast context: ``amp``'s dtype, or none."""
    _check_amp(amp)
    return (torch.autocast(device.type, dtype=AMP_DTYPES[amp]) if amp
            else contextlib.nullcontext())


def _batch_keys(model: nn.Module) -> tuple[str, ...] | None:
    """What to gather per batch: the model's ``input_keys`` and the label (or all)."""
    keys = getattr(model, "input_keys", None)
    return None if keys is None else (*keys, "label")


def _check_loss(loss_value: float, epoch: int, batch: int, n_batches: int,
                advice: str) -> None:
    """Raise :class:`TrainingDiverged` at a non-finite training loss."""
    if not math.isfinite(loss_value):
        raise TrainingDiverged(
            f"training diverged: the loss is {loss_value} in epoch {epoch}, "
            f"batch {batch} of {n_batches}. " + advice,
            epoch=epoch, batch=batch, loss=loss_value)


def _compiled(model: nn.Module, compile: bool):
    """``torch.compile(model)`` for full batches, or ``None`` (eager)."""
    if not compile:
        return None
    # dynamic=False: one graph for the full batch size; the last, smaller batch of an
    # epoch is run eagerly by train_epoch instead of triggering a recompilation
    return torch.compile(model, dynamic=False)


def train_epoch(model: nn.Module, data: TensorData, optimizer: torch.optim.Optimizer, *,
                batch_size: int = 1024, generator: torch.Generator | None = None,
                amp: str | None = None, step_model: Callable | None = None,
                epoch: int = 1, checked: bool = False, advice: str = "") -> float:
    """One pass over ``data`` in shuffled minibatches: the inner loop of :func:`fit`.

    Each batch: ``zero_grad``, forward (under ``amp`` autocast if given), mean
    ``BCEWithLogitsLoss`` in float32, backward, ``optimizer.step()``. Returns the mean
    training loss over the rows. ``step_model`` (e.g. a compiled ``model``) replaces
    ``model`` for full batches; ``checked=True`` says the indices of ``data`` were
    validated already (``model.check_inputs``), so the batches skip the layers' scans.
    Raises :class:`TrainingDiverged` at the first non-finite loss (``advice`` is added
    to its message). :func:`fit` adds everything else: evaluation, early stopping,
    restoring the best weights; ``benchmarks/peers.py`` times this function alone.

    A ``model`` wrapped in ``DistributedDataParallel`` trains data-parallel:
    each rank takes its share of every global batch of ``batch_size`` rows (see
    :func:`_train_epoch_ddp`); the returned loss is the mean over all the rows.
    """
    if isinstance(model, DistributedDataParallel):
        return _train_epoch_ddp(
            model, data, optimizer, batch_size=batch_size, generator=generator,
            amp=amp, step_model=step_model, epoch=epoch, checked=checked,
            advice=advice)
    autocast = _autocast(data.device, amp)
    model.train()
    n_batches = data.num_batches(batch_size)
    total, count = 0.0, 0
    with skip_index_checks() if checked else contextlib.nullcontext():
        for b, batch in enumerate(data.batches(batch_size, shuffle=True, generator=generator,
                                               keys=_batch_keys(model)), 1):
            y = batch["label"]
            forward = step_model if step_model is not None and len(y) == batch_size \
                else model
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                logits = forward(batch)
            logits = logits.float()
            loss = nnf.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
            loss_value = float(loss.detach())  # the one host sync per batch
            _check_loss(loss_value, epoch, b, n_batches, advice)
            loss.backward()
            optimizer.step()
            total += loss_value * len(y)
            count += len(y)
    return total / count


def _train_epoch_ddp(ddp: DistributedDataParallel, data: TensorData,
                     optimizer: torch.optim.Optimizer, *, batch_size: int,
                     generator: torch.Generator | None, amp: str | None,
                     step_model: Callable | None, epoch: int, checked: bool,
                     advice: str) -> float:
    """:func:`train_epoch` for a ``DistributedDataParallel`` model.

    Every rank draws the same permutation (the same seeded ``generator``), cuts
    the same global batches of ``batch_size`` rows and keeps the ``rank``-th of
    ``world_size`` contiguous shards of each (:meth:`TensorData.batches` with
    ``shard``). The update is the one-process update on the global batch:

    DDP averages the gradients, ``g = (1/W) sum_r g_r``. A rank with ``n_r`` of
    the batch's ``n`` rows scales its mean loss by ``W n_r / n``, so
    ``g_r = (W n_r / n) grad(mean_r)`` and ``g = sum_r (n_r / n) grad(mean_r)
    = grad(mean over the n rows)``: exact for shards of unequal size too (the
    last, partial batch; ``batch_size`` not divisible by ``W``). With equal
    shards the scale is exactly 1. A rank whose shard is empty (a batch of
    fewer than ``W`` rows) runs one spare row with scale 0, so that it still
    takes part in DDP's gradient all-reduce.

    The batch's loss (sum over the shards, all-reduced before ``backward``) is
    the same number on every rank, so all the ranks raise
    :class:`TrainingDiverged` together instead of leaving the others waiting.
    """
    autocast = _autocast(data.device, amp)
    group = ddp.process_group
    world, me = dist.get_world_size(group), dist.get_rank(group)
    ddp.train()
    n, n_batches = len(data), data.num_batches(batch_size)
    total, count, spare = 0.0, 0, None
    with skip_index_checks() if checked else contextlib.nullcontext():
        keys = _batch_keys(ddp.module)
        batches = data.batches(batch_size, shuffle=True, generator=generator,
                               keys=keys, shard=(me, world))
        for b, batch in enumerate(batches, 1):
            n_global = min(batch_size, n - (b - 1) * batch_size)
            n_mine = len(batch["label"])
            if n_mine == 0:  # fewer rows than ranks: a spare row, scale 0
                if spare is None:
                    spare = {k: v[:1] for k, v in data.tensors.items()
                             if keys is None or k in keys}
                batch = spare
            y = batch["label"]
            full = n_global == batch_size
            forward = step_model if step_model is not None and full else ddp
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                logits = forward(batch)
            logits = logits.float()
            loss = nnf.binary_cross_entropy_with_logits(
                logits, y.to(logits.dtype))
            part = (loss.detach().double() * n_mine).reshape(1)
            dist.all_reduce(part, group=group)  # the batch's summed loss
            loss_value = float(part) / n_global
            _check_loss(loss_value, epoch, b, n_batches, advice)
            (loss * (world * n_mine / n_global)).backward()
            optimizer.step()
            total += loss_value * n_global
            count += n_global
    return total / count


def _ddp_wrap(model: nn.Module, device: torch.device, train: TensorData,
              valid: TensorData, settings: dict) -> DistributedDataParallel:
    """``model`` in ``DistributedDataParallel``, once the ranks agree.

    Every rank must call :func:`fit` with the same data and settings, else
    the shards would not add up to the global batch; a difference raises
    ``ValueError`` on every rank (not a hang on one of them).
    """
    backend = dist.get_backend()
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(
            f"the process group's backend is nccl, which needs CUDA, but the "
            f"model is on {device}: move it to the GPU (default_device() "
            "after ctr_src.distributed.setup()), or set up the group with "
            "backend='gloo'")

    def fingerprint(d: TensorData) -> tuple:
        return (len(d), float(d["label"].double().sum()),
                int(d["fields"].sum()))

    mine = dict(settings, train=fingerprint(train), valid=fingerprint(valid))
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    differ = sorted(k for k in mine if any(o[k] != mine[k] for o in everyone))
    if differ:
        raise ValueError(
            "the ranks called fit with different "
            + ", ".join(differ) + " (" + "; ".join(
                f"rank {r}: " + ", ".join(f"{k}={o[k]}" for k in differ)
                for r, o in enumerate(everyone))
            + "): every rank must pass the same train and valid data "
            "(rows as (count, label sum, index sum)) and the same settings; "
            "data-parallel training splits each batch, not the data set")
    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _agree(scores: dict | None, bad: _NonFiniteScores | None):
    """Rank 0's validation outcome on every rank (one broadcast).

    Every rank holds the same weights and scores the full valid set, so the
    outcomes agree anyway; taking rank 0's makes early stopping and the best
    epoch the same on every rank by construction.
    """
    box = [(scores, None if bad is None else (bad.n_bad, bad.n, bad.example))]
    dist.broadcast_object_list(box, src=0)
    scores, bad = box[0]
    return scores, None if bad is None else _NonFiniteScores(*bad)


def fit(model: nn.Module, train: TensorData, valid: TensorData, *, epochs: int = 10,
        batch_size: int = 1024, lr: float = 1e-3, weight_decay: float = 0.0, patience: int = 2,
        min_delta: float = 0.0, seed: int = 2024, device=None, progress: bool = True,
        gauc: bool = False, monitor: str = "auc",
        optimizer: Callable | None = None, amp: str | None = None,
        fused: bool | None = None, compile: bool = False) -> History:
    """Train ``model`` on ``train``; early-stop on validation AUC; restore the best weights.

    * ``epochs``: the most epochs to run; ``patience``: epochs without a gain in the
      ``monitor``-ed validation metric larger than ``min_delta`` before stopping;
    * ``monitor``: ``"auc"`` (default) or ``"gauc"`` (group AUC over ``valid["user"]``,
      the metric of the DIN paper; implies ``gauc=True``) decides the best epoch;
    * ``seed``: seeds the minibatch order (seed the model's initialisation yourself with
      :func:`ctr_src.utils.seed_everything` before building it);
    * ``device``: where to train (default: where the model is); the data is moved there;
    * ``optimizer``: a factory ``params -> torch.optim.Optimizer`` (default Adam);
    * ``fused``: the default Adam uses PyTorch's fused kernel (one pass over all the
      parameters; the same update as the per-parameter loop, rounded differently) where
      there is one, the CPU and CUDA; ``fused=False`` asks for the loop;
    * speed options, off by default because each changes the float results:
      ``amp="bf16"`` runs the forward pass under bfloat16 autocast (the loss stays in
      float32); ``compile=True`` compiles the model with ``torch.compile`` for full batches
      (the last, smaller batch of an epoch runs eagerly, so it never triggers a
      recompilation). Evaluation always runs the eager model in float32.

    The data's indices are validated once, here, for the whole train and valid sets
    (``model.check_inputs``); the batches then skip the layers' per-call scans.

    Under ``torchrun`` (a ``torch.distributed`` process group initialised, e.g.
    with :func:`ctr_src.distributed.process_group`), ``fit`` trains
    data-parallel with ``DistributedDataParallel``: every rank passes the same
    data and settings, takes its contiguous share of each global batch of
    ``batch_size`` rows and the gradients are averaged, so each step is the
    one-process step on the global batch (up to float rounding; dropout draws
    different masks on each rank). Every rank scores the full valid set;
    rank 0's scores decide early stopping on all of them, so they stop and
    restore the same best epoch. The progress bar shows on rank 0 only.

    Returns a :class:`History` with, per epoch, ``train_loss``, ``valid_auc``,
    ``valid_logloss`` (and ``valid_gauc``), and ``seconds`` of training; the model is left
    in eval mode with the weights of the best epoch (by ``monitor``).

    Raises ``ValueError`` before training if a label of ``train`` or ``valid`` is not a
    finite 0 or 1, and :class:`TrainingDiverged` at the first batch whose loss is not finite
    (or after an epoch whose validation scores are not). Whatever the error (``KeyboardInterrupt``
    included), the model is first given back its last good weights: the best epoch's (and
    eval mode) if an epoch has finished, else the weights (and mode) it had when ``fit`` was
    called; the :class:`History` so far is attached to the exception as ``.history``.
    """
    _check_data(train, "train")
    _check_data(valid, "valid")
    if monitor not in ("auc", "gauc"):
        raise ValueError(f"monitor must be 'auc' or 'gauc', got {monitor!r}")
    gauc = gauc or monitor == "gauc"
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    _check_labels(train, "train")
    _check_labels(valid, "valid")
    _check_amp(amp)
    # a book model validates both data sets once here; another module checks each batch
    checked = _check_inputs(model, train, "train") & _check_inputs(model, valid, "valid")
    was_training = model.training
    initial_state = _cpu_state(model)  # what a failure before the first epoch gives back
    history = History()
    best_auc, best_state, wait = -np.inf, None, 0
    bar = None
    try:
        device = torch.device(device) if device is not None else model_device(model)
        model.to(device)
        train, valid = train.to(device), valid.to(device)
        ddp = None
        if distributed.is_distributed():
            ddp = _ddp_wrap(model, device, train, valid, dict(
                epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                weight_decay=weight_decay, patience=patience,
                min_delta=min_delta, monitor=monitor, amp=amp))
        opt = optimizer(model.parameters()) if optimizer else adam(
            model, lr=lr, weight_decay=weight_decay, fused=fused)
        gen = torch.Generator().manual_seed(seed)
        trained = model if ddp is None else ddp  # DDP: the same parameters
        step_model = _compiled(trained, compile)
        bar = tqdm(range(1, epochs + 1), desc=type(model).__name__,
                   disable=not progress or distributed.rank() != 0,
                   file=sys.stderr, leave=True, dynamic_ncols=False, ncols=100)
        for epoch in bar:
            start = time.perf_counter()
            train_loss = train_epoch(
                trained, train, opt, batch_size=batch_size, generator=gen,
                amp=amp,
                step_model=step_model, epoch=epoch, checked=checked,
                advice=_divergence_advice(lr, optimizer is not None))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            try:
                scores, bad = _evaluate(model, valid, 8192, gauc), None
            except _NonFiniteScores as exc:
                scores, bad = None, exc
            if ddp is not None:
                scores, bad = _agree(scores, bad)
            if bad is not None:
                raise TrainingDiverged(
                    f"training diverged: after epoch {epoch} the validation scores are not "
                    f"finite ({bad}) although every training loss was: the last "
                    "steps "
                    "pushed the weights to NaN/inf. "
                    + _divergence_advice(lr, optimizer is not None),
                    epoch=epoch) from None
            record = {"epoch": epoch, "train_loss": train_loss, "valid_auc": scores["auc"],
                      "valid_logloss": scores["logloss"], "seconds": seconds}
            if gauc:
                record["valid_gauc"] = scores["gauc"]
            history.records.append(record)
            if scores[monitor] > best_auc + min_delta or best_state is None:
                best_auc, wait = scores[monitor], 0
                best_state = copy.deepcopy(model.state_dict())
                history.best_epoch = epoch  # only once its weights are safely copied
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
    except BaseException as exc:
        if bar is not None:
            bar.close()
        if best_state is not None:
            _restore_after_failure(exc, model, best_state,
                                   f"the weights of the best epoch ({history.best_epoch})",
                                   False, history)
        else:
            _restore_after_failure(exc, model, initial_state,
                                   "the weights the model had before fit", was_training,
                                   history)
        raise
