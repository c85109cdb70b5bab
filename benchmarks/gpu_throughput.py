"""DeepFM training throughput on Criteo-shaped synthetic data, ctr_src against peers.

Usage::

    make bench-gpu                       # the peers installed into .bench-lib first
    python benchmarks/gpu_throughput.py [--device cuda] [--rows 2000000]
                                        [--batches 4096 max] [--epochs 3]
                                        [--configs eager bf16 compile bf16+compile]
                                        [--libraries ctr_src deepctr_torch torch_rechub]

The data imitates the shape of the Criteo display-advertising logs, not their content:
39 fields (13 bucketised integer features and 26 categorical ones) whose vocabulary
sizes spread from 4 to 400,000 (:data:`FIELD_DIMS`, about 1.3 M rows in all), ``--rows``
impressions (2 M by default) with a click rate of about 25 % drawn from a planted
logistic model, so that the validation AUC says whether training learns. DeepFM as in
the issue: D = 16, an MLP of 3 x 400 (ReLU, no dropout), Adam at lr 1e-3.

``ctr_src`` runs through :func:`ctr_src.train.train_epoch`, the loop of ``fit``, with the
data resident on the device and every batch an index gather there (``TensorData``); the
configurations switch on its speed options: ``bf16`` (bfloat16 autocast of the forward
pass), ``compile`` (``torch.compile`` of the model for full batches; the last, smaller
batch of an epoch runs eagerly, so it never recompiles -- the number of graphs compiled
is printed). Adam is fused, ``fit``'s default. The peers train through their own APIs
at batch 4096 (DeepCTR-Torch's ``fit``; torch-rechub's ``CTRTrainer``).

Per configuration and batch size: samples/s over the epochs after the first (warm-up
and compilation), the validation AUC after the last epoch and the peak GPU memory
allocated. ``max`` in ``--batches`` doubles the batch from 4096 until the device runs out
of memory or the batch reaches a quarter of the rows, and reports the largest that ran.
Without a GPU it runs on the CPU -- to check the script, not to measure anything.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
BENCH_LIB = ROOT / ".bench-lib"
if BENCH_LIB.is_dir() and str(BENCH_LIB) not in sys.path:
    sys.path.append(str(BENCH_LIB))

from ctr_src import metrics, models, train  # noqa: E402
from ctr_src.data import TensorData  # noqa: E402

EMBED, MLP_DIMS, LR = 16, (400, 400, 400), 1e-3
#: 13 bucketised integer features, then 26 categorical fields (Criteo's layout)
FIELD_DIMS = [64, 48, 72, 40, 96, 80, 56, 44, 88, 12, 40, 60, 50] + [
    4, 10, 27, 100, 305, 600, 1_000, 1_460, 2_200, 3_200, 4_000, 5_600, 8_000,
    10_000, 12_000, 15_000, 25_000, 40_000, 60_000, 90_000, 120_000, 150_000,
    200_000, 250_000, 300_000, 400_000]
CONFIGS = {"eager": {}, "bf16": {"amp": "bf16"}, "compile": {"compile": True},
           "bf16+compile": {"amp": "bf16", "compile": True}}


def synthetic(rows: int, seed: int = 0) -> tuple[TensorData, TensorData]:
    """Criteo-shaped train and valid sets (90/10) with a planted logistic signal."""
    g = torch.Generator().manual_seed(seed)
    dims = torch.tensor(FIELD_DIMS)
    # Zipf-like indices: small indices are frequent, as in real logs
    u = torch.rand(rows, len(FIELD_DIMS), generator=g)
    fields = (u.pow(3) * dims).long().clamp_max(dims - 1)
    weight = torch.randn(int(dims.sum()), generator=g) * 0.3
    offsets = dims.cumsum(0) - dims
    logit = weight[fields + offsets].sum(1) - 1.1
    label = (torch.rand(rows, generator=g) < torch.sigmoid(logit)).float()
    cut = rows * 9 // 10
    return (TensorData(fields=fields[:cut], label=label[:cut]),
            TensorData(fields=fields[cut:], label=label[cut:]))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_epochs(epoch, epochs: int, device) -> list[float]:
    """Seconds of each of ``epochs`` calls of ``epoch()``, the device synchronised."""
    seconds = []
    for _ in range(epochs):
        _sync(device)
        start = time.perf_counter()
        epoch()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _graphs() -> int:
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 - dynamo internals differ between versions
        return -1


def run_ctr_src(train_set, valid, batch, config, device, epochs):
    torch.manual_seed(0)
    model = models.build("deepfm", field_dims=FIELD_DIMS, embed_dim=EMBED,
                         mlp_dims=MLP_DIMS).to(device)
    opt = train.adam(model, lr=LR)
    options = CONFIGS[config]
    step_model = train._compiled(model, options.get("compile", False))
    gen = torch.Generator().manual_seed(0)
    graphs_before = _graphs()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train._check_inputs(model, train_set, "train")  # what fit does once
    seconds = _timed_epochs(
        lambda: train.train_epoch(model, train_set, opt, batch_size=batch,
                                  generator=gen, amp=options.get("amp"),
                                  step_model=step_model, checked=True),
        epochs, device)
    auc = metrics.auc(valid["label"].cpu().numpy(),
                      train.predict(model, valid).numpy())
    out = {"seconds": seconds, "valid_auc": auc}
    if step_model is not None:
        out["graphs_compiled"] = _graphs() - graphs_before
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _named(data):
    x = data["fields"].cpu().numpy()
    return {f"c{i}": x[:, i] for i in range(x.shape[1])}


def run_deepctr(train_set, valid, batch, device, epochs):
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DeepFM
    cols = [SparseFeat(f"c{i}", d, embedding_dim=EMBED)
            for i, d in enumerate(FIELD_DIMS)]
    dev = "cuda:0" if device.type == "cuda" else "cpu"
    torch.manual_seed(0)
    model = DeepFM(cols, cols, dnn_hidden_units=MLP_DIMS, l2_reg_linear=0,
                   l2_reg_embedding=0, device=dev)
    model.compile(torch.optim.Adam(model.parameters(), lr=LR), "binary_crossentropy")
    x, y = _named(train_set), train_set["label"].cpu().numpy()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    def epoch():
        with contextlib.redirect_stdout(io.StringIO()):  # it prints per call
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)

    seconds = _timed_epochs(epoch, epochs, device)
    scores = model.predict(_named(valid), batch_size=65536)
    out = {"seconds": seconds,
           "valid_auc": metrics.auc(valid["label"].cpu().numpy(), scores)}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def run_rechub(train_set, valid, batch, device, epochs):
    from torch_rechub.basic.features import SparseFeature
    from torch_rechub.models.ranking import DeepFM
    from torch_rechub.trainers import CTRTrainer
    from torch_rechub.utils.data import TorchDataset
    torch.manual_seed(0)
    feats = [SparseFeature(f"c{i}", vocab_size=d, embed_dim=EMBED)
             for i, d in enumerate(FIELD_DIMS)]
    model = DeepFM(deep_features=feats, fm_features=feats,
                   mlp_params={"dims": list(MLP_DIMS), "dropout": 0.0,
                               "activation": "relu"})
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = CTRTrainer(model, optimizer_params={"lr": LR, "weight_decay": 0},
                             n_epoch=1, device=str(device),
                             model_path=str(ROOT / "_build" / "rechub"))
    loader = torch.utils.data.DataLoader(
        TorchDataset(_named(train_set), train_set["label"].cpu().numpy()),
        batch_size=batch, shuffle=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    def epoch():
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
            trainer.train_one_epoch(loader)

    seconds = _timed_epochs(epoch, epochs, device)
    model.eval()
    with torch.no_grad():
        x = {k: torch.as_tensor(v).to(device) for k, v in _named(valid).items()}
        scores = model(x).cpu().numpy()
    out = {"seconds": seconds,
           "valid_auc": metrics.auc(valid["label"].cpu().numpy(), scores)}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc)


def largest_batch(train_set, valid, config, device, epochs, start=4096):
    """Double the batch until it no longer fits (or reaches a quarter of the rows)."""
    best, batch = None, start
    while batch <= len(train_set) // 4:
        try:
            best = (batch, run_ctr_src(train_set, valid, batch, config, device, epochs))
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not _is_oom(exc):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            break
        batch *= 2
    return best


def samples_per_s(rows: int, seconds: list[float]) -> float:
    timed = seconds[1:] if len(seconds) > 1 else seconds  # the first is warm-up
    return rows / statistics.median(timed)


def available(library: str) -> str | None:
    module = {"deepctr_torch": "deepctr_torch", "torch_rechub": "torch_rechub"}[library]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            __import__(module)
    except ImportError:
        return f"{library} is not installed (`make bench-peers` installs it)"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", nargs="+", default=["4096", "max"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS),
                        choices=list(CONFIGS))
    parser.add_argument("--libraries", nargs="+",
                        default=["ctr_src", "deepctr_torch", "torch_rechub"],
                        choices=["ctr_src", "deepctr_torch", "torch_rechub"])
    parser.add_argument("--peer-batch", type=int, default=4096)
    parser.add_argument("--out", default=str(ROOT / "results" / "gpu_throughput.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA device")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is warm-up)")
    for b in args.batches:
        if b != "max" and not (b.isdigit() and int(b) > 0):
            parser.error(f"--batches takes positive integers or 'max', got {b!r}")
    train_set, valid = synthetic(args.rows)
    train_set, valid = train_set.to(device), valid.to(device)
    n = len(train_set)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    print(f"{name}; torch {torch.__version__}; {n:,} training rows, 39 fields, "
          f"DeepFM D={EMBED} MLP {'-'.join(map(str, MLP_DIMS))}")
    if device.type != "cuda":
        print("no GPU: running on the CPU to check the script; the numbers say nothing "
              "about GPU throughput")
    rows = []
    header = f"{'library':<14}{'config':<14}{'batch':>8}{'samples/s':>13}" \
             f"{'valid AUC':>11}{'peak MiB':>10}{'graphs':>8}"
    print(header)
    print("-" * len(header))

    def show(lib, config, batch, r):
        sps = samples_per_s(n, r["seconds"])
        rows.append({"library": lib, "config": config, "batch": batch,
                     "samples_per_s": sps, **r})
        mem = r.get("peak_gpu_mb")
        print(f"{lib:<14}{config:<14}{batch:>8}{sps:>13,.0f}{r['valid_auc']:>11.4f}"
              f"{'' if mem is None else f'{mem:10.0f}':>10}"
              f"{r.get('graphs_compiled', ''):>8}", flush=True)

    if "ctr_src" in args.libraries:
        for config in args.configs:
            if "compile" in config and not _compile_works(device):
                print(f"{'ctr_src':<14}{config:<14} skipped: torch.compile does not work "
                      "here (no C compiler / Triton)")
                continue
            for b in args.batches:
                if b == "max":
                    found = largest_batch(train_set, valid, config, device, args.epochs)
                    if found:
                        show("ctr_src", config, found[0], found[1])
                else:
                    show("ctr_src", config, int(b),
                         run_ctr_src(train_set, valid, int(b), config, device,
                                     args.epochs))
    for lib, fn in (("deepctr_torch", run_deepctr), ("torch_rechub", run_rechub)):
        if lib not in args.libraries:
            continue
        why = available(lib)
        if why:
            print(f"{lib:<14}skipped: {why}")
            continue
        show(lib, "its fit", args.peer_batch,
             fn(train_set, valid, args.peer_batch, device, args.epochs))
    peer = {r["batch"]: r["samples_per_s"] for r in rows if r["library"] == "deepctr_torch"}
    if peer:
        base = peer[args.peer_batch]
        print(f"\nagainst DeepCTR-Torch at batch {args.peer_batch} ({base:,.0f} samples/s):")
        for r in rows:
            if r["library"] == "ctr_src":
                print(f"  ctr_src {r['config']:<13} batch {r['batch']:>8}: "
                      f"{r['samples_per_s'] / base:6.1f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps({"device": name, "torch": torch.__version__,
                               "rows": n, "field_dims": FIELD_DIMS, "results": rows},
                              indent=1))
    os.replace(tmp, out)
    print(f"\nwrote {out}")
    return 0


def _compile_works(device: torch.device) -> bool:
    """Whether torch.compile can build a kernel here (it needs a C compiler on the CPU
    and Triton on a GPU); tried once on a tiny function."""
    try:
        f = torch.compile(lambda x: x * 2 + 1)
        x = torch.ones(3, device=device)
        return bool(torch.equal(f(x), torch.full_like(x, 3.0)))
    except Exception:  # noqa: BLE001 - any failure means: not here
        return False


if __name__ == "__main__":
    sys.exit(main())
