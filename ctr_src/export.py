"""Export a model for serving: ONNX (checked with ONNX Runtime), TorchScript.

A book model takes a batch *dict* and returns ``(B,)`` logits. A serving
runtime wants positional tensors, so the exported graph takes the model's
inputs **in this fixed order** (:data:`INPUT_ORDER`), keeping those the
example batch has:

1. ``fields``: ``(B, F)`` int64 -- per-field indices, as the model takes them;
2. ``values``: ``(B, F)`` float32 -- if the example batch has ``"values"``;
3. ``history``: ``(B, L)`` or ``(B, L, S)`` int64 -- DIN and DIN-base only;
4. ``history_mask``: ``(B, L)`` bool -- DIN and DIN-base only;

and returns one output, ``logits``, ``(B,)`` float32 (apply the sigmoid for
click probabilities). The batch size ``B`` is dynamic, and so is the history
length ``L``. Other keys of the example batch (``"label"``, ``"user"``) are
not inputs and are ignored, so a batch of the book's data
(``data.test.batch(...)``) is a valid example.

For example (it writes files)::

    from ctr_src import export, models
    model = models.build("deepfm", field_dims=[3, 4], embed_dim=8)
    batch = {"fields": torch.tensor([[0, 1], [2, 3]])}
    export.export_onnx(model, "deepfm.onnx", batch)      # checked on export
    export.check_onnx(model, "deepfm.onnx", [batch])      # max |difference|
    export.export_torchscript(model, "deepfm.pt", batch)  # torch.jit.load it

**Which models.** Every name in :data:`ctr_src.models.REGISTRY` exports to both
formats (:data:`SUPPORT`, :func:`supported`); tests/test_export.py exports each
one and compares it with PyTorch on random batches of several sizes, so the
table is measured, not assumed. A model of any other class (``MeanBaseline``,
your own ``nn.Module``) raises ``TypeError``: its export has not been checked.
How the formats are produced, and why:

* **ONNX** through ``torch.onnx.export(..., dynamo=True)`` (``torch.export``
  and onnxscript; the older TorchScript-based exporter is deprecated), then
  checked against PyTorch with ONNX Runtime to ``atol=1e-5``. It needs the
  packages in ``requirements-export.txt`` (``make install-export``), which the
  book's own environment does not install.
* **TorchScript** by tracing (``torch.jit.trace``), not scripting:
  ``torch.jit.script`` fails on the models, because the layers' Python-level
  input checks and helpers are not TorchScript (measured: it stops at
  ``table.padding_idx`` in ``layers.embedding_lookup``, an attribute a
  scripted ``nn.Embedding`` does not keep, and without that at
  ``tuple(fields.shape)`` in an error message). Tracing records the tensor
  operations only, and the models have no data-dependent control flow once the
  per-call index scans are off. PyTorch 2.13 marks ``torch.jit`` deprecated in
  favour of ``torch.export``; the files still load with ``torch.jit.load`` and
  in LibTorch (C++).

**What the exported graph does not check.** Both formats are traced inside
:func:`ctr_src.layers.skip_index_checks` (a data-dependent ``if`` cannot be
traced), and the Python-level shape checks leave nothing in the graph. So an
index outside ``[0, field_dims[f])``, a wrong number of fields or a history
longer than ``max_history`` is *not* caught at serving time: an index out of
its field's range silently reads another field's row (ONNX Runtime raises only
past either end of the whole table). Validate requests before they reach the
graph, e.g. with :func:`ctr_src.layers.check_index_range`.

Every file is written to a temporary file in the destination folder and renamed
into place only after it has been checked, so a failed export leaves neither a
half-written nor an unchecked file behind (nor replaces an existing one). The
model itself is not changed: a copy is exported, on the CPU, in eval mode
(dropout off, Dice on its running statistics).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import logging
import os
import uuid
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .layers import skip_index_checks
from .models import REGISTRY

#: The exported graph's inputs, in this order (those the example batch has).
INPUT_ORDER = ("fields", "values", "history", "history_mask")
#: The exported graph's one output: ``(B,)`` logits.
OUTPUT_NAME = "logits"
#: The inputs a sequence model (DIN, DIN-base) needs beside ``fields``.
SEQUENCE_INPUTS = ("history", "history_mask")
#: TorchScript files carry this JSON (model name, input and output names) as an
#: extra file: ``torch.jit.load(path, _extra_files={EXTRA_FILE: ""})``.
EXTRA_FILE = "ctr_src_export.json"

INSTALL_HINT = ("pip install -r requirements-export.txt (or `make "
                "install-export`), into the book's environment")


class ExportNotSupported(NotImplementedError):
    """The registry entry says the format does not export (:data:`SUPPORT`)."""


class ExportMismatchError(AssertionError):
    """An exported file's logits differ from PyTorch's by more than atol."""


@dataclass(frozen=True)
class Support:
    """Whether a registered model exports to ONNX and TorchScript; why not."""

    onnx: bool
    torchscript: bool
    why_not_onnx: str = ""
    why_not_torchscript: str = ""


_BOTH = Support(onnx=True, torchscript=True)

#: Per registered name: the formats it exports to, measured by
#: tests/test_export.py (both formats to 1e-5 on batches of 1, 7 and 33 rows,
#: histories of 1, 3 and 12 positions, with and without ``values``; the
#: variants noted below too). All export to both; an entry with ``False``
#: makes the export raise :class:`ExportNotSupported` with its reason.
SUPPORT: dict[str, Support] = {
    "lr": _BOTH,
    "fm": _BOTH,
    "ffm": _BOTH,
    "fwfm": _BOTH,
    "afm": _BOTH,          # also attention=False
    "ipnn": _BOTH,
    "opnn": _BOTH,         # also kernel="vec"
    "pnn": _BOTH,          # also kernel="num"
    "wide_deep": _BOTH,
    "embedding_mlp": _BOTH,
    "deepfm": _BOTH,
    "din_base": _BOTH,     # also pooling="mean"
    "din": _BOTH,          # also softmax with PReLU, and a (B, L) history
}


def supported(model_name: str) -> Support:
    """The :class:`Support` entry of a model name (spelt as for ``build``).

    >>> supported("deepfm").onnx
    True

    Raises ``ValueError`` listing the known names for an unknown one.
    """
    key = (model_name.lower().replace("-", "_").replace("&", "_")
           if isinstance(model_name, str) else model_name)
    if key not in SUPPORT:
        raise ValueError(f"unknown model {model_name!r}; known models: "
                         f"{', '.join(sorted(SUPPORT))}")
    return SUPPORT[key]


def registered_name(model: nn.Module) -> str:
    """The registry name a model was built under, ``"opnn"`` for an outer PNN.

    Raises ``TypeError`` for a model that no registry entry builds: its export
    has not been checked.
    """
    for name, factory in REGISTRY.items():
        if isinstance(factory, partial):
            if type(model) is factory.func and all(
                    getattr(model, k, object()) == v
                    for k, v in factory.keywords.items()):
                return name
        elif type(model) is factory:
            return name
    raise TypeError(
        f"cannot export a {type(model).__name__}: export supports the "
        f"registered "
        f"models only ({', '.join(sorted(REGISTRY))}), built with "
        f"ctr_src.models.build(name, ...)")


# ------------------------------------------------------------------- inputs

class ServingModule(nn.Module):
    """``model(batch)`` as ``module(*tensors)``, in :data:`INPUT_ORDER`.

    ``input_names`` are the batch keys the positional tensors stand for, e.g.
    ``("fields", "history", "history_mask")``. ``(B,)`` logits out.
    """

    def __init__(self, model: nn.Module, input_names: Iterable[str]):
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``tensors in input_names order -> (B,)`` logits."""
        return self.model(dict(zip(self.input_names, inputs)))


def _is_sequence_model(model: nn.Module) -> bool:
    return registered_name(model) in ("din", "din_base")


def _float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _input_names(model: nn.Module, batch) -> tuple[str, ...]:
    """The inputs an example batch gives the model, in order (or an error)."""
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"the example batch must be a dict of tensors {{'fields': (B, F) "
            f"long, ...}} as the model takes it, got {type(batch).__name__}")
    sequence = SEQUENCE_INPUTS if _is_sequence_model(model) else ()
    need = ("fields",) + sequence
    missing = [k for k in need if k not in batch]
    if missing:
        raise KeyError(
            f"the example batch for {registered_name(model)} lacks {missing} "
            f"(keys: {sorted(batch)}); it needs {list(need)}"
            + (", built with ctr_src.data.sequences" if sequence else ""))
    names = tuple(k for k in INPUT_ORDER if k in batch)
    if not sequence:
        names = tuple(k for k in names if k not in SEQUENCE_INPUTS)
    for k in names:
        if not isinstance(batch[k], torch.Tensor):
            raise TypeError(f"example batch[{k!r}] must be a torch.Tensor, "
                            f"got {type(batch[k]).__name__}")
    return names


def _dtype_of(name: str, float_dtype: torch.dtype) -> torch.dtype:
    return {"fields": torch.long, "history": torch.long,
            "history_mask": torch.bool}.get(name, float_dtype)


def _inputs(batch, names, float_dtype, device="cpu"):
    """The batch's input tensors, in order, in the exported graph's dtypes."""
    missing = [k for k in names if k not in batch]
    if missing:
        raise KeyError(f"the batch lacks {missing} (keys: {sorted(batch)}); "
                       f"the exported graph takes {list(names)}")
    out = []
    for k in names:
        t = batch[k]
        if k in ("fields", "history") and t.is_floating_point():
            raise TypeError(f"batch[{k!r}] must hold integer indices, got "
                            f"{t.dtype}")
        dtype = _dtype_of(k, float_dtype)
        out.append(t.detach().to(device=device, dtype=dtype))
    return tuple(out)


def _grown(inputs, names, rows: int = 1, positions: int = 0):
    """The inputs with ``rows`` more rows (copies of row 0) and, for a history,
    ``positions`` more masked positions (index 0): a batch of another size."""
    out = []
    for k, t in zip(names, inputs):
        t = torch.cat([t, t[:1].expand(rows, *t.shape[1:])]) if rows else t
        if positions and k in SEQUENCE_INPUTS:
            pad = torch.zeros_like(t[:, :1])
            pad = pad.expand(-1, positions, *t.shape[2:])
            t = torch.cat([t, pad], 1)
        out.append(t)
    return tuple(out)


def _prepare(model: nn.Module, example_batch):
    """A CPU eval copy of the model, its input names and example inputs of
    >= 2 rows (and >= 2 history positions), validated by running the model."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a ctr_src model (torch.nn.Module), got "
                        f"{type(model).__name__}")
    name = registered_name(model)
    names = _input_names(model, example_batch)
    copied = copy.deepcopy(model).to("cpu").eval()
    dtype = _float_dtype(copied)
    inputs = _inputs(example_batch, names, dtype)
    if inputs[0].ndim != 2 or inputs[0].shape[0] == 0:
        raise ValueError(f"example batch['fields'] must be (B, F) with "
                         f"B >= 1, got {tuple(inputs[0].shape)}")
    with torch.no_grad():  # the model's own checks (indices too) judge it
        copied(dict(zip(names, inputs)))
    # torch.export specialises dimensions of size 1: trace with at least 2 rows
    # and 2 history positions (the values do not matter, only the operations)
    rows = max(0, 2 - inputs[0].shape[0])
    positions = 0
    if "history" in names and getattr(copied, "max_history", 2) >= 2:
        positions = max(0, 2 - inputs[names.index("history")].shape[1])
    if rows or positions:
        inputs = _grown(inputs, names, rows, positions)
    return name, copied, names, inputs


def _check_support(name: str, fmt: str) -> None:
    entry = SUPPORT[name]
    if not getattr(entry, fmt):
        why = getattr(entry, f"why_not_{fmt}")
        label = {"onnx": "ONNX", "torchscript": "TorchScript"}[fmt]
        raise ExportNotSupported(f"{name} does not export to {label}: {why}")


def _require(*modules: str) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"ONNX export and its check need {module}, "
                              f"which is not installed: {INSTALL_HINT}"
                              ) from exc


@contextlib.contextmanager
def _atomic(path) -> Iterable[Path]:
    """A temporary path next to ``path``; renamed to ``path`` if the block
    succeeds, removed otherwise."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the file to write")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {path.parent} does not exist; "
                                f"create it first")
    # a fresh hidden name in the same folder (so the rename is atomic); the
    # writer creates it with the usual permissions
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def _quiet_jit():
    """torch.jit is deprecated in PyTorch 2.13 (see the module docstring): say
    it once there, not at every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r".*torch\.jit")
        yield


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's known, harmless chatter (and only that)."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "torchvision is not installed. ..."
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*will not be used, "
                                    r"since it shares the same shape")
            warnings.filterwarnings("ignore", category=FutureWarning,
                                    message=r".*LeafSpec")
            yield
    finally:
        logger.setLevel(level)


# --------------------------------------------------------------------- ONNX

def export_onnx(model: nn.Module, path,
                example_batch: Mapping[str, torch.Tensor], *,
                opset_version: int | None = None, check: bool = True) -> Path:
    """Write ``model`` as an ONNX file at ``path``; return the path.

    ``example_batch`` is a batch the model takes (a dict, see the module
    docstring); which of :data:`INPUT_ORDER` it holds fixes the graph's inputs
    (e.g. with or without ``"values"``). Batch size and history length are
    dynamic. ``opset_version``: the ONNX opset (PyTorch's default if ``None``).
    With ``check`` (default), the file is compared with PyTorch by
    :func:`check_onnx` on the example batch and on one with another batch size
    (and history length) before it is renamed into place.

    Raises ``TypeError`` for an unregistered model type; ``KeyError``,
    ``TypeError`` or ``ValueError`` (the model's own, for shapes and indices)
    for a wrong example batch; :class:`ExportNotSupported` where
    :data:`SUPPORT` says no; ``ImportError`` (saying what to install) without
    onnx, onnxscript or (with ``check``) onnxruntime;
    :class:`ExportMismatchError` if the check fails.
    """
    name, copied, names, inputs = _prepare(model, example_batch)
    _check_support(name, "onnx")
    _require("onnx", "onnxscript", *(("onnxruntime",) if check else ()))
    batch = torch.export.Dim("batch")
    length = None
    if "history" in names:
        length = torch.export.Dim("history_len",
                                  max=max(copied.max_history, 2))
    dynamic = tuple({0: batch, 1: length} if k in SEQUENCE_INPUTS and length
                    else {0: batch} for k in names)
    wrapper = ServingModule(copied, names).eval()
    with torch.no_grad(), skip_index_checks(), _quiet_exporter():
        program = torch.onnx.export(
            wrapper, inputs, dynamo=True, input_names=list(names),
            output_names=[OUTPUT_NAME], dynamic_shapes=(dynamic,),
            opset_version=opset_version, external_data=False,
            verbose=False)
    program.model.metadata_props["ctr_src.model"] = name
    with _atomic(path) as tmp:
        program.save(tmp, external_data=False)
        if check:
            check_onnx(copied, tmp, _check_batches(names, inputs))
    return Path(path)


def _check_batches(names, inputs) -> list[dict[str, torch.Tensor]]:
    """The example, and a batch one row (and one masked position) larger."""
    grown = _grown(inputs, names, 1, 1 if "history" in names else 0)
    return [dict(zip(names, inputs)), dict(zip(names, grown))]


def _as_batches(batches) -> list:
    if isinstance(batches, Mapping):
        return [batches]
    batches = list(batches)
    if not batches or not all(isinstance(b, Mapping) for b in batches):
        raise TypeError("batches must be a batch dict or a non-empty list "
                        "of them")
    return batches


def _reference(model: nn.Module, batch, names, dtype) -> np.ndarray:
    """PyTorch's eval-mode logits (the model's mode is restored afterwards)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            inputs = _inputs(batch, names, dtype, device)
            ref = model(dict(zip(names, inputs)))
    finally:
        model.train(was_training)
    return ref.detach().cpu().numpy()


def _compare(model, fmt, path, i, ref, out, atol) -> float:
    name = _model_label(model)
    if out.shape != ref.shape:
        raise ExportMismatchError(
            f"{name}: the {fmt} file {path} returned logits of shape "
            f"{out.shape} on batch {i}, PyTorch {ref.shape}")
    diff = 0.0
    if ref.size:
        diff = float(np.max(np.abs(out.astype(np.float64) - ref)))
    if not diff <= atol:  # also catches NaN
        raise ExportMismatchError(
            f"{name}: the {fmt} file {path} differs from PyTorch by up to "
            f"{diff:.3g} (atol {atol:g}) on batch {i} of {ref.shape[0]} rows; "
            f"is it the model the file was exported from? Re-export it")
    return diff


def _same_model(model, exported: str, path) -> None:
    if _model_label(model) != exported:
        raise ExportMismatchError(
            f"{path} holds a {exported} model, not a {_model_label(model)}; "
            f"compare it with the model it was exported from")


def _model_label(model) -> str:
    try:
        return registered_name(model)
    except TypeError:
        return type(model).__name__


def check_onnx(model: nn.Module, path, batches, atol: float = 1e-5) -> float:
    """Run the ONNX file at ``path`` with ONNX Runtime on ``batches`` (a batch
    dict or a list of them) and compare with ``model``'s eval-mode logits.

    Returns the largest absolute difference; raises
    :class:`ExportMismatchError`, naming the model, the batch and the
    difference, where it exceeds ``atol`` (or the shapes differ, or the file
    holds another registered model). The inputs are taken from each batch by
    the file's input names and cast to its dtypes; PyTorch runs with its index
    checks on, so an invalid batch fails with the model's own message. ONNX
    Runtime runs on one CPU thread. ``ImportError`` without onnxruntime.
    """
    _require("onnxruntime")
    import onnxruntime as ort
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}; write one with "
                                f"export_onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options,
                                   providers=["CPUExecutionProvider"])
    names = tuple(i.name for i in session.get_inputs())
    meta = session.get_modelmeta().custom_metadata_map
    exported = meta.get("ctr_src.model")
    if exported is None or any(k not in INPUT_ORDER for k in names):
        raise ValueError(f"{path} was not written by export_onnx (inputs "
                         f"{list(names)}, no ctr_src.model metadata)")
    _same_model(model, exported, path)
    dtype = _float_dtype(model)
    worst = 0.0
    for i, batch in enumerate(_as_batches(batches)):
        ref = _reference(model, batch, names, dtype)
        inputs = _inputs(batch, names, dtype)
        (out,) = session.run([OUTPUT_NAME],
                             {k: t.numpy() for k, t in zip(names, inputs)})
        worst = max(worst, _compare(model, "ONNX", path, i, ref, out, atol))
    return worst


# -------------------------------------------------------------- TorchScript

def export_torchscript(model: nn.Module, path,
                       example_batch: Mapping[str, torch.Tensor], *,
                       check: bool = True) -> Path:
    """Write ``model`` as a traced TorchScript file at ``path``; return it.

    Load it with ``torch.jit.load(path)`` (or LibTorch) and call it with the
    tensors of :data:`INPUT_ORDER` that the example batch has, positionally;
    the names are stored in the file (:func:`torchscript_inputs`). With
    ``check`` (default) the file is loaded back and compared with PyTorch
    (:func:`check_torchscript`) on the example batch and on one of another size
    before it is renamed into place. Errors as for :func:`export_onnx`; no
    extra packages are needed.
    """
    name, copied, names, inputs = _prepare(model, example_batch)
    _check_support(name, "torchscript")
    wrapper = ServingModule(copied, names).eval()
    with torch.no_grad(), skip_index_checks(), _quiet_jit():
        # the tracer warns where the models' shape checks compare sizes in
        # Python: they hold for every input of the right shape, and the check
        # below runs another batch size (and history length) through the graph
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,
                                message=r"Converting a tensor to a Python")
        traced = torch.jit.trace(wrapper, inputs, check_trace=False)
    meta = {"model": name, "inputs": list(names), "output": OUTPUT_NAME}
    with _atomic(path) as tmp, _quiet_jit():
        torch.jit.save(traced, str(tmp),
                       _extra_files={EXTRA_FILE: json.dumps(meta)})
        if check:
            check_torchscript(copied, tmp, _check_batches(names, inputs))
    return Path(path)


def _load_torchscript(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no TorchScript file at {path}; write one "
                                f"with export_torchscript")
    extra = {EXTRA_FILE: ""}
    with _quiet_jit():
        module = torch.jit.load(str(path), map_location="cpu",
                                _extra_files=extra)
    if not extra[EXTRA_FILE]:
        raise ValueError(f"{path} was not written by export_torchscript (no "
                         f"{EXTRA_FILE} in it)")
    return module, json.loads(extra[EXTRA_FILE])


def torchscript_inputs(path) -> list[str]:
    """The input names, in order, of a :func:`export_torchscript` file."""
    return list(_load_torchscript(path)[1]["inputs"])


def check_torchscript(model: nn.Module, path, batches,
                      atol: float = 1e-5) -> float:
    """:func:`check_onnx` for a TorchScript file: the largest absolute
    difference from ``model``'s eval-mode logits over ``batches``, or
    :class:`ExportMismatchError`."""
    module, meta = _load_torchscript(path)
    _same_model(model, meta["model"], path)
    names = tuple(meta["inputs"])
    dtype = _float_dtype(model)
    worst = 0.0
    for i, batch in enumerate(_as_batches(batches)):
        ref = _reference(model, batch, names, dtype)
        with torch.no_grad():
            out = module(*_inputs(batch, names, dtype)).numpy()
        worst = max(worst, _compare(model, "TorchScript", path, i, ref, out,
                                    atol))
    return worst


__all__ = ["INPUT_ORDER", "OUTPUT_NAME", "SUPPORT", "Support",
           "ExportMismatchError", "ExportNotSupported", "ServingModule",
           "check_onnx", "check_torchscript", "export_onnx",
           "export_torchscript", "registered_name", "supported",
           "torchscript_inputs"]
