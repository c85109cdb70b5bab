"""Export for serving (ctr_src/export.py): each registered model, both formats.

Each model is exported once per format from a 4-row example batch and compared
with PyTorch's eval-mode logits on fresh random batches of 1, 7 and 33 rows
(DIN: histories of 1, 3 and 12 positions, one row's empty), to ``ATOL``. The
ONNX tests need onnx, onnxscript and onnxruntime (``requirements-export.txt``,
``make install-export``): without them they skip and say so, and with
``CTR_REQUIRE_EXPORT=1`` (CI) they fail instead. The TorchScript tests need
nothing beyond requirements.txt.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest
import torch

from ctr_src import export, models
from ctr_src.export import (ExportMismatchError, ExportNotSupported, Support,
                            check_onnx, check_torchscript, export_onnx,
                            export_torchscript)
from ctr_src.utils import seed_everything

DIMS = [4, 6, 3, 5]
SEQ = (1, 2)  # DIN histories hold an index of field 1 (item) and 2 (genre)
NAMES = sorted(models.REGISTRY)
SIZES = (1, 7, 33)  # batch size 1, and sizes below and above the example's 4
LENGTHS = (1, 3, 12)  # DIN history lengths; the example has 5
# Tolerance on logits (absolute). They are O(1) here (|logit| < 4), where
# float32 spacing is 1e-7 to 5e-7; ONNX Runtime fuses and reorders the same
# float32 operations (MatMul+Add, its own GEMM and reduction kernels), so its
# sums round differently by a few units in the last place per layer: measured
# on these models, at most 9.5e-7 (DIN; TorchScript runs PyTorch's own
# kernels: exactly 0). 1e-5 leaves a margin of 10, while a real export bug (a
# weight lost, a term dropped, a batch size or history length frozen into the
# graph, dropout left on) moves logits by 1e-2 or more. Much larger logits
# (|logit| ~ 25) have shown differences of 5e-6: an absolute tolerance is sized
# for the logits it checks.
ATOL = 1e-5
# torch.jit is deprecated in PyTorch 2.13 (ctr_src/export.py says why it is
# still used)
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
ENABLE = "make install-export (pip install -r requirements-export.txt)"


def required() -> bool:
    return os.environ.get("CTR_REQUIRE_EXPORT", "") not in ("", "0")


@pytest.fixture(scope="module")
def onnx_runtime():
    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        message = (f"ONNX export tests: {', '.join(missing)} not installed; "
                   f"{ENABLE}")
        if required():
            pytest.fail(message + " (CTR_REQUIRE_EXPORT is set: they must run "
                        "here)")
        pytest.skip(message)
    import onnxruntime
    return onnxruntime


def session(ort, path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def is_sequence(name: str) -> bool:
    return name.startswith("din")


def build(name: str, seed: int = 0, **kw):
    """A small model whose every weight matters: the zero-initialised ones (the
    linear terms) get random values too, so an export that loses one fails."""
    seed_everything(seed)
    if name != "lr":
        kw.setdefault("embed_dim", 3)
    if is_sequence(name):
        kw.setdefault("seq_fields", SEQ)
    model = models.build(name, field_dims=DIMS, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def batch(name: str, size: int, length: int = 5, seed: int = 1,
          values: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 1000 + size * 10 + length)
    b = {"fields": torch.stack([torch.randint(0, d, (size,), generator=g)
                                for d in DIMS], 1),
         "label": torch.randint(0, 2, (size,), generator=g).float()}
    if values:
        b["values"] = torch.rand(size, len(DIMS), generator=g) * 2
    if is_sequence(name):
        b["history"] = torch.stack(
            [torch.randint(0, DIMS[s], (size, length), generator=g)
             for s in SEQ], -1)
        mask = torch.rand(size, length, generator=g) < 0.7
        mask[0] = False  # an empty history
        b["history_mask"] = mask
    return b


def random_batches(name: str, values: bool = True):
    """Fresh batches of every size in SIZES (and history length in LENGTHS)."""
    lengths = LENGTHS if is_sequence(name) else (5,)
    return [batch(name, size, length, seed=2, values=values)
            for size in SIZES for length in lengths]


def logits(model, b) -> np.ndarray:
    with torch.no_grad():
        return model(b).numpy()


def expected_inputs(name: str) -> list[str]:
    return ["fields", "values"] + (["history", "history_mask"]
                                   if is_sequence(name) else [])


# ------------------------------------------------------------------ support

def test_support_table_covers_the_registry():
    assert set(export.SUPPORT) == set(models.REGISTRY)
    for name in NAMES:
        entry = export.supported(name)
        assert isinstance(entry, Support)
        for fmt in ("onnx", "torchscript"):  # a "no" must say why
            assert getattr(entry, fmt) or getattr(entry, f"why_not_{fmt}")
    assert export.supported("Wide-Deep") is export.SUPPORT["wide_deep"]
    with pytest.raises(ValueError, match="known models: afm"):
        export.supported("nope")


@pytest.mark.parametrize("name", NAMES)
def test_registered_name(name):
    assert export.registered_name(build(name)) == name


# --------------------------------------------------------------------- ONNX

@pytest.mark.parametrize("name", NAMES)
def test_onnx_matches_pytorch(name, onnx_runtime, tmp_path):
    model = build(name)
    path = tmp_path / f"{name}.onnx"
    if not export.supported(name).onnx:
        with pytest.raises(ExportNotSupported,
                           match=export.SUPPORT[name].why_not_onnx):
            export_onnx(model, path, batch(name, 4))
        assert not path.exists()
        return
    assert export_onnx(model, path, batch(name, 4)) == path
    # nothing else in the folder: no temporary file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]

    ort = session(onnx_runtime, path)
    names = [i.name for i in ort.get_inputs()]
    assert names == expected_inputs(name)
    assert [o.name for o in ort.get_outputs()] == ["logits"]
    worst = 0.0
    for b in random_batches(name):
        (out,) = ort.run(None, {k: b[k].numpy() for k in names})
        ref = logits(model, b)
        assert out.shape == ref.shape == (b["fields"].shape[0],)
        worst = max(worst, float(np.abs(out - ref).max()))
    assert worst <= ATOL
    # check_onnx makes the same comparison itself
    assert check_onnx(model, path, random_batches(name)) == \
        pytest.approx(worst)


def test_onnx_without_values_from_a_one_row_example(onnx_runtime, tmp_path):
    """The example's keys fix the inputs; a 1-row, 1-position example still
    gives a graph with a dynamic batch size and history length."""
    for name in ("fm", "din"):
        model = build(name)
        example = batch(name, 1, length=1, values=False)
        path = export_onnx(model, tmp_path / f"{name}.onnx", example)
        names = [i.name for i in session(onnx_runtime, path).get_inputs()]
        assert names == [k for k in expected_inputs(name) if k != "values"]
        tests = random_batches(name, values=False)
        assert check_onnx(model, path, tests) <= ATOL


def test_onnx_variants(onnx_runtime, tmp_path):
    """Model arguments that change the graph, and a (B, L) history."""
    cases = [("afm", dict(attention=False)), ("opnn", dict(kernel="vec")),
             ("pnn", dict(kernel="num")),
             ("din", dict(softmax=True, activation="prelu")),
             ("din_base", dict(pooling="mean"))]
    for i, (name, kw) in enumerate(cases):
        model = build(name, **kw)
        path = export_onnx(model, tmp_path / f"{i}.onnx", batch(name, 4))
        assert check_onnx(model, path, random_batches(name)) <= ATOL, name

    def one_field(b):  # (B, L, 1) -> (B, L): the history of the item alone
        return {k: v[..., 0] if k == "history" else v for k, v in b.items()}

    model = build("din", seq_fields=(1,))
    path = export_onnx(model, tmp_path / "din1.onnx",
                       one_field(batch("din", 4)))
    tests = [one_field(b) for b in random_batches("din")]
    assert check_onnx(model, path, tests) <= ATOL


def test_onnx_export_uses_eval_mode_and_leaves_the_model_alone(onnx_runtime,
                                                               tmp_path):
    model = build("deepfm", dropout=0.5).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = export_onnx(model, tmp_path / "m.onnx", batch("deepfm", 4))
    assert model.training  # still in train mode, weights untouched
    assert all(torch.equal(state[k], v)
               for k, v in model.state_dict().items())
    # compared with eval-mode logits: dropout is not in the graph
    assert check_onnx(model, path, random_batches("deepfm")) <= ATOL
    assert model.training  # check_onnx restores the mode too


def test_check_onnx_catches_another_model(onnx_runtime, tmp_path):
    model = build("fm")
    path = export_onnx(model, tmp_path / "fm.onnx", batch("fm", 4))
    other = build("fm", seed=1)  # same architecture, other weights
    with pytest.raises(ExportMismatchError,
                       match=r"fm: .* differs from PyTorch by up to .* "
                             r"\(atol 1e-05\) on batch 0 of 5 rows"):
        check_onnx(other, path, [batch("fm", 5)])
    with pytest.raises(ExportMismatchError,
                       match="holds a fm model, not a ffm"):
        check_onnx(build("ffm"), path, batch("fm", 5))
    with pytest.raises(KeyError, match="lacks"):
        check_onnx(model, path, [{"label": torch.ones(2)}])
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        check_onnx(model, tmp_path / "none.onnx", batch("fm", 5))


def test_failed_onnx_check_leaves_no_file(onnx_runtime, tmp_path,
                                          monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the previous export")

    def fail(*args, **kw):
        raise ExportMismatchError("simulated")

    monkeypatch.setattr(export, "check_onnx", fail)
    with pytest.raises(ExportMismatchError, match="simulated"):
        export_onnx(build("fm"), path, batch("fm", 4))
    # not replaced, not truncated, and no temporary file left
    assert path.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_onnx_needs_the_export_packages(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(ImportError,
                       match="pip install -r requirements-export.txt"):
        export_onnx(build("fm"), tmp_path / "m.onnx", batch("fm", 4))
    with pytest.raises(ImportError, match="make install-export"):
        check_onnx(build("fm"), tmp_path / "m.onnx", batch("fm", 4))
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------- TorchScript

@pytest.mark.parametrize("name", NAMES)
def test_torchscript_matches_pytorch(name, tmp_path):
    model = build(name)
    path = tmp_path / f"{name}.pt"
    if not export.supported(name).torchscript:
        with pytest.raises(ExportNotSupported,
                           match=export.SUPPORT[name].why_not_torchscript):
            export_torchscript(model, path, batch(name, 4))
        assert not path.exists()
        return
    assert export_torchscript(model, path, batch(name, 4)) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    names = export.torchscript_inputs(path)
    assert names == expected_inputs(name)
    loaded = torch.jit.load(str(path))
    worst = 0.0
    for b in random_batches(name):
        with torch.no_grad():
            out = loaded(*[b[k] for k in names]).numpy()
        ref = logits(model, b)
        assert out.shape == ref.shape == (b["fields"].shape[0],)
        worst = max(worst, float(np.abs(out - ref).max()))
    assert worst <= ATOL
    assert check_torchscript(model, path, random_batches(name)) == \
        pytest.approx(worst)


def test_torchscript_from_a_one_row_example_and_variants(tmp_path):
    cases = [("din", dict(softmax=True)), ("fm", {}),
             ("din_base", dict(pooling="mean"))]
    for i, (name, kw) in enumerate(cases):
        model = build(name, **kw)
        path = export_torchscript(model, tmp_path / f"{i}.pt",
                                  batch(name, 1, length=1, values=False))
        assert "values" not in export.torchscript_inputs(path)
        tests = random_batches(name, values=False)
        assert check_torchscript(model, path, tests) <= ATOL, name


def test_check_torchscript_catches_another_model(tmp_path):
    path = export_torchscript(build("deepfm"), tmp_path / "m.pt",
                              batch("deepfm", 4))
    with pytest.raises(ExportMismatchError,
                       match="deepfm: .* differs from PyTorch"):
        check_torchscript(build("deepfm", seed=3), path, batch("deepfm", 6))
    other = tmp_path / "plain.pt"
    traced = torch.jit.trace(torch.nn.Linear(2, 1), torch.ones(1, 2))
    torch.jit.save(traced, str(other))
    with pytest.raises(ValueError, match="not written by export_torchscript"):
        check_torchscript(build("deepfm"), other, batch("deepfm", 6))


# ---------------------------------------------------------------- bad input

@pytest.fixture(params=["onnx", "torchscript"])
def exporter(request):
    if request.param == "onnx":
        request.getfixturevalue("onnx_runtime")
        return export_onnx
    return export_torchscript


def test_unsupported_entry_raises_its_reason(exporter, tmp_path,
                                             monkeypatch):
    """An entry saying "no" stops the export with its reason (no entry says
    no today, so one is made up here)."""
    monkeypatch.setitem(export.SUPPORT, "fm", Support(
        onnx=False, torchscript=False, why_not_onnx="reason one",
        why_not_torchscript="reason two"))
    with pytest.raises(ExportNotSupported,
                       match=r"fm does not export to .*: reason"):
        exporter(build("fm"), tmp_path / "m", batch("fm", 4))
    assert list(tmp_path.iterdir()) == []


def test_bad_input(exporter, tmp_path):
    path = tmp_path / "m"
    fm, din = build("fm"), build("din")
    example = batch("fm", 4)
    for unknown in (models.MeanBaseline(DIMS), torch.nn.Linear(4, 1)):
        with pytest.raises(TypeError, match="registered models only"):
            exporter(unknown, path, example)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        exporter("fm", path, example)
    with pytest.raises(TypeError, match="dict of tensors"):
        exporter(fm, path, example["fields"])
    with pytest.raises(KeyError, match="lacks .*history"):
        exporter(din, path, example)
    with pytest.raises(TypeError, match="integer indices"):
        exporter(fm, path, {"fields": example["fields"].float()})
    with pytest.raises(ValueError, match="fields"):  # the model's own check
        exporter(fm, path, {"fields": torch.zeros(4, 3, dtype=torch.long)})
    with pytest.raises(IndexError, match="column 1"):  # example's indices
        exporter(fm, path, {"fields": torch.tensor([[0, 6, 0, 0]])})
    with pytest.raises(ValueError, match="B >= 1"):
        exporter(fm, path, {"fields": torch.zeros(0, 4, dtype=torch.long)})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        exporter(fm, tmp_path / "no" / "m", example)
    with pytest.raises(IsADirectoryError):
        exporter(fm, tmp_path, example)
    assert list(tmp_path.iterdir()) == []
