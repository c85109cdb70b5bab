"""Training speed of ``ctr_src`` against peer libraries, on the same data and settings.

Usage::

    make bench-peers                 # installs the peers into .bench-lib, then runs this
    python benchmarks/peers.py [--models fm deepfm afm ipnn wide_deep] [--epochs 10]
                               [--seeds 3] [--device cpu|cuda] [--threads 2]
                               [--libraries ctr_src deepctr_torch torch_rechub minimal]
                               [--out results/peers.json]

Every library trains the same model on MovieLens-100K's CTR task (``load_ctr``: 8
fields, the book's 80/10/10 split) with the same sizes and optimiser: embeddings of
D = 16, an MLP of 256-128 with dropout 0.2 where the model has one, AFM's attention of
16 units with dropout 0.2, Adam at lr 1e-3 without weight decay or L2 terms, batches of
1,024 rows, ``--epochs`` epochs without early stopping, ``--seeds`` seeds. Each library
trains through its own documented training API, so its data pipeline counts:

* ``ctr_src``: :func:`ctr_src.train.train_epoch`, the loop of ``fit`` (the data validated
  once, as ``fit`` does);
* ``deepctr_torch``: ``model.fit(x, y, batch_size, epochs=1)``, one call per epoch (its
  optimiser keeps its state between calls);
* ``torch_rechub``: ``CTRTrainer.train_one_epoch`` over a ``DataLoader`` of its
  ``TorchDataset``;
* ``minimal``: a hand-written loop of a few lines (``nn.Embedding`` tables, one
  ``randperm`` per epoch, slices of it as batches) -- what speed costs nothing.

**Interleaved repeats**: for each model and seed, every library's model is built, then
the epochs alternate between libraries (epoch 1 of each, in an order that rotates, then
epoch 2, ...), so a slower or faster spell of a shared machine falls on all of them. The
first epoch of each run is warm-up and is not counted. Reported per library: the median
seconds per epoch (and the range), samples per second, test AUC over the seeds, and the
peak resident memory of a separate process that loads the data and trains one epoch of
that model alone (on CUDA: the peak allocated GPU memory instead). Ratios are
``ctr_src``'s samples/s over the peer's, as the ratio of medians and its range over the
seeds. Memory (``+MiB``) is the growth of the resident set over the data loaded
(``VmHWM - VmRSS``, Linux) while the model is built and trains one epoch. Differences of design between the libraries' models are listed in
:data:`DESIGN_NOTES` and printed with the table.

Speed lives here, never in tests (``tests/test_benchmarks.py`` only checks that this
script runs and writes what it says).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))
BENCH_LIB = ROOT / ".bench-lib"  # make bench-peers installs the peers here
if BENCH_LIB.is_dir() and str(BENCH_LIB) not in sys.path:
    sys.path.append(str(BENCH_LIB))

from ctr_src import metrics, models, train  # noqa: E402
from ctr_src.data import load_ctr  # noqa: E402
from ctr_src.utils import seed_everything  # noqa: E402

EMBED, MLP_DIMS, DROPOUT, ATTENTION, LR, BATCH = 16, (256, 128), 0.2, 16, 1e-3, 1024
MODELS = ("fm", "deepfm", "afm", "ipnn", "wide_deep")
LIBRARIES = ("ctr_src", "deepctr_torch", "torch_rechub", "minimal")
# ctr_src's samples/s over DeepCTR-Torch's, and over the minimal loop's (issue #15)
TARGETS = {("fm", "deepctr_torch"): 6.0, ("deepfm", "deepctr_torch"): 2.0,
           ("afm", "deepctr_torch"): 1.5, ("ipnn", "deepctr_torch"): 1.5,
           ("fm", "minimal"): 1 / 1.1}
DESIGN_NOTES = {
    "deepctr_torch": [
        "FM is DeepCTR-Torch's DeepFM without DNN (it has no plain FM model).",
        "AFM applies dropout to the pooled vector (as the paper's released code does); "
        "ctr_src applies it to every pair interaction, as the paper's text says -- "
        "P = 28 times more random numbers per row.",
        "Its training step adds its L2 regulariser terms (set to 0 here) and keeps "
        "per-feature embedding tables; init N(0, 1e-4) (ctr_src: Xavier).",
        "Its fit wraps the arrays in a TensorDataset and a DataLoader each epoch."],
    "torch_rechub": [
        "Has DeepFM and WideDeep of these models. Its first-order (wide) part is a "
        "linear layer on the embeddings, not a weight per feature; its models end in "
        "a sigmoid trained with BCELoss.",
        "Its DataLoader collates per-row dicts (TorchDataset)."],
    "minimal": ["Written here for FM and DeepFM only: nn.Embedding tables and a "
                "randperm per epoch, no checks of any input."],
}


# ----------------------------------------------------------------------------- runners

class Runner:
    """One library's model of one kind: ``epoch()`` trains, ``scores(test)`` predicts."""

    library = ""

    def epoch(self) -> None:
        raise NotImplementedError

    def scores(self, test) -> np.ndarray:
        raise NotImplementedError


class CtrSrcRunner(Runner):
    library = "ctr_src"
    KWARGS = {"fm": dict(embed_dim=EMBED),
              "afm": dict(embed_dim=EMBED, attention_dim=ATTENTION, dropout=DROPOUT),
              "deepfm": dict(embed_dim=EMBED, mlp_dims=MLP_DIMS, dropout=DROPOUT),
              "ipnn": dict(embed_dim=EMBED, mlp_dims=MLP_DIMS, dropout=DROPOUT),
              "wide_deep": dict(embed_dim=EMBED, mlp_dims=MLP_DIMS, dropout=DROPOUT)}

    def __init__(self, key, data, seed, device, checks_every_batch=False):
        seed_everything(seed)
        self.model = models.build(key, field_dims=data.field_dims,
                                  **self.KWARGS[key]).to(device)
        self.train = data.train.to(device)
        # what fit does once: labels and indices validated for the whole data set
        train._check_labels(self.train, "train")
        self.checked = not checks_every_batch and train._check_inputs(
            self.model, self.train, "train")
        self.opt = train.adam(self.model, lr=LR)  # fit's default optimiser
        self.gen = torch.Generator().manual_seed(seed)

    def epoch(self):
        train.train_epoch(self.model, self.train, self.opt, batch_size=BATCH,
                          generator=self.gen, checked=self.checked)

    def scores(self, test):
        return train.predict_proba(self.model, test)


class CheckedCtrSrcRunner(CtrSrcRunner):
    """ctr_src with the per-batch index scans on (what a direct call of a model does)."""
    library = "ctr_src, checks every batch"

    def __init__(self, key, data, seed, device):
        super().__init__(key, data, seed, device, checks_every_batch=True)


class MinimalRunner(Runner):
    """FM or DeepFM in a few plain lines: the floor for the cost of a training step."""
    library = "minimal"

    def __init__(self, key, data, seed, device):
        if key not in ("fm", "deepfm"):
            raise KeyError(key)
        torch.manual_seed(seed)
        dims = torch.tensor(data.field_dims)
        self.offsets = (dims.cumsum(0) - dims).to(device)
        n, f = int(dims.sum()), len(dims)
        self.v = nn.Embedding(n, EMBED).to(device)
        self.w = nn.Embedding(n, 1).to(device)
        nn.init.xavier_uniform_(self.v.weight)  # N(0, 1) would cripple its AUC
        nn.init.zeros_(self.w.weight)
        self.b = nn.Parameter(torch.zeros(1, device=device))
        self.mlp = None
        params = [*self.v.parameters(), *self.w.parameters(), self.b]
        if key == "deepfm":
            self.mlp = nn.Sequential(
                nn.Linear(f * EMBED, MLP_DIMS[0]), nn.ReLU(), nn.Dropout(DROPOUT),
                nn.Linear(MLP_DIMS[0], MLP_DIMS[1]), nn.ReLU(), nn.Dropout(DROPOUT),
                nn.Linear(MLP_DIMS[1], 1)).to(device)
            params += list(self.mlp.parameters())
        self.opt = torch.optim.Adam(params, lr=LR)
        self.x = data.train["fields"].to(device)
        self.y = data.train["label"].to(device)
        self.gen = torch.Generator().manual_seed(seed)

    def logits(self, x):
        rows = x + self.offsets
        e = self.v(rows)
        s = e.sum(1)
        out = self.w(rows).sum((1, 2)) + self.b + 0.5 * (s * s - (e * e).sum(1)).sum(1)
        if self.mlp is not None:
            out = out + self.mlp(e.flatten(1)).squeeze(1)
        return out

    def epoch(self):
        if self.mlp is not None:
            self.mlp.train()
        perm = torch.randperm(len(self.y), generator=self.gen).to(self.y.device)
        for s in range(0, len(perm), BATCH):
            i = perm[s:s + BATCH]
            loss = nnf.binary_cross_entropy_with_logits(self.logits(self.x[i]), self.y[i])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()

    @torch.no_grad()
    def scores(self, test):
        if self.mlp is not None:
            self.mlp.eval()
        x = test["fields"].to(self.y.device)
        return torch.sigmoid(self.logits(x)).cpu().numpy()


def _columns(data):
    return [f"f{i}" for i in range(len(data.field_dims))]


def _numpy_inputs(split, names):
    x = split["fields"].cpu().numpy()
    return {n: x[:, i] for i, n in enumerate(names)}


class DeepCTRRunner(Runner):
    library = "deepctr_torch"

    def __init__(self, key, data, seed, device):
        from deepctr_torch.inputs import SparseFeat
        from deepctr_torch.models import AFM, PNN, WDL, DeepFM
        self.names = _columns(data)
        cols = [SparseFeat(n, d, embedding_dim=EMBED)
                for n, d in zip(self.names, data.field_dims)]
        dev = "cuda:0" if torch.device(device).type == "cuda" else "cpu"
        common = dict(seed=seed, device=dev)
        no_l2 = dict(l2_reg_linear=0, l2_reg_embedding=0)
        mlp = dict(dnn_hidden_units=MLP_DIMS, dnn_dropout=DROPOUT)
        if key == "fm":
            model = DeepFM(cols, cols, dnn_hidden_units=(), **no_l2, **common)
        elif key == "deepfm":
            model = DeepFM(cols, cols, **mlp, **no_l2, **common)
        elif key == "afm":
            model = AFM(cols, cols, attention_factor=ATTENTION, afm_dropout=DROPOUT,
                        l2_reg_att=0, **no_l2, **common)
        elif key == "ipnn":
            model = PNN(cols, **mlp, l2_reg_embedding=0, use_inner=True,
                        use_outter=False, **common)
        elif key == "wide_deep":
            model = WDL(cols, cols, **mlp, **no_l2, **common)
        else:
            raise KeyError(key)
        model.compile(torch.optim.Adam(model.parameters(), lr=LR), "binary_crossentropy")
        torch.manual_seed(seed)  # its DataLoader shuffles with the global generator
        self.model = model
        self.x = _numpy_inputs(data.train, self.names)
        self.y = data.train["label"].cpu().numpy()

    def epoch(self):
        with contextlib.redirect_stdout(io.StringIO()):  # it prints per call
            self.model.fit(self.x, self.y, batch_size=BATCH, epochs=1, verbose=0)

    def scores(self, test):
        return self.model.predict(_numpy_inputs(test, self.names), batch_size=8192)


class RecHubRunner(Runner):
    library = "torch_rechub"

    def __init__(self, key, data, seed, device):
        from torch_rechub.basic.features import SparseFeature
        from torch_rechub.models.ranking import DeepFM, WideDeep
        from torch_rechub.trainers import CTRTrainer
        from torch_rechub.utils.data import TorchDataset
        torch.manual_seed(seed)
        self.names = _columns(data)
        feats = [SparseFeature(n, vocab_size=d, embed_dim=EMBED)
                 for n, d in zip(self.names, data.field_dims)]
        mlp = {"dims": list(MLP_DIMS), "dropout": DROPOUT, "activation": "relu"}
        if key == "deepfm":
            model = DeepFM(deep_features=feats, fm_features=feats, mlp_params=mlp)
        elif key == "wide_deep":
            model = WideDeep(wide_features=feats, deep_features=feats, mlp_params=mlp)
        else:
            raise KeyError(key)
        self.device = torch.device(device)
        with contextlib.redirect_stdout(io.StringIO()):
            self.trainer = CTRTrainer(model, optimizer_params={"lr": LR, "weight_decay": 0},
                                      n_epoch=1, device=str(self.device),
                                      model_path=str(ROOT / "_build" / "rechub"))
        x = _numpy_inputs(data.train, self.names)
        self.loader = torch.utils.data.DataLoader(
            TorchDataset(x, data.train["label"].cpu().numpy()), batch_size=BATCH,
            shuffle=True)
        self.model = model

    def epoch(self):
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
            self.trainer.train_one_epoch(self.loader)

    @torch.no_grad()
    def scores(self, test):
        self.model.eval()
        x = {n: torch.as_tensor(v).to(self.device)
             for n, v in _numpy_inputs(test, self.names).items()}
        return self.model(x).cpu().numpy()


RUNNERS = {"ctr_src": CtrSrcRunner, "deepctr_torch": DeepCTRRunner,
           "torch_rechub": RecHubRunner, "minimal": MinimalRunner,
           "ctr_src, checks every batch": CheckedCtrSrcRunner}


def available(library: str) -> str | None:
    """``None`` if ``library`` can run here, else why not."""
    module = {"deepctr_torch": "deepctr_torch", "torch_rechub": "torch_rechub"}.get(library)
    if module is None:
        return None
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            __import__(module)
    except ImportError as exc:
        return (f"{library} is not installed ({exc}); `make bench-peers` installs the "
                "pinned peers (requirements-bench.txt) into .bench-lib/")
    return None


def supports(library: str, key: str) -> bool:
    return not ((library == "minimal" and key not in ("fm", "deepfm"))
                or (library == "torch_rechub" and key not in ("deepfm", "wide_deep")))


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- measuring

def run_model(key, libraries, data, args):
    """Interleaved epochs of every library for one model; seconds and AUC per library."""
    libs = [lib for lib in libraries if supports(lib, key)]
    out = {lib: {"seconds": [], "seconds_by_seed": [], "auc": []} for lib in libs}
    test_labels = data.test["label"].numpy()
    for s, seed in enumerate(range(args.seed, args.seed + args.seeds)):
        runners = {lib: RUNNERS[lib](key, data, seed, args.device) for lib in libs}
        per_seed = {lib: [] for lib in libs}
        for epoch in range(args.epochs):
            k = (epoch + s) % len(libs)  # rotate who goes first
            for lib in libs[k:] + libs[:k]:
                _sync(args.device)
                start = time.perf_counter()
                runners[lib].epoch()
                _sync(args.device)
                if epoch > 0:  # the first epoch is warm-up
                    per_seed[lib].append(time.perf_counter() - start)
        for lib in libs:
            out[lib]["seconds"] += per_seed[lib]
            out[lib]["seconds_by_seed"].append(per_seed[lib])
            out[lib]["auc"].append(metrics.auc(test_labels, runners[lib].scores(data.test)))
        del runners
    return out


def probe_memory(key, library, device, rows):
    """Peak memory of training one epoch of ``key`` with ``library`` (run in a subprocess)."""
    data = load_ctr()
    if rows:
        data.train = data.train.subset(slice(0, rows))
    _reset_peak_rss()
    base = _status_mb("VmRSS")
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runner = RUNNERS[library](key, data, 0, device)
    runner.epoch()
    peak = _status_mb("VmHWM")
    out = {"rss_before_mb": base, "peak_rss_mb": peak, "extra_rss_mb": peak - base}
    if torch.device(device).type == "cuda":
        _sync(device)
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _reset_peak_rss() -> None:
    """Start ``VmHWM`` afresh from the current RSS (Linux 4.0+), so that the peak is the
    training's and not the data loading's. (``ru_maxrss`` cannot be reset, and survives
    ``exec`` from the parent process.)"""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def memory(key, library, args):
    cmd = [sys.executable, __file__, "--probe-memory", key, library,
           "--device", args.device, "--threads", str(args.threads)]
    if args.rows:
        cmd += ["--rows", str(args.rows)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(results, n_train):
    """Medians, samples/s and ratios from the raw seconds."""
    table = {}
    for key, libs in results.items():
        rows = {}
        for lib, r in libs.items():
            med = statistics.median(r["seconds"])
            rows[lib] = {"median_s": med, "min_s": min(r["seconds"]),
                         "max_s": max(r["seconds"]), "samples_per_s": n_train / med,
                         "auc_mean": float(np.mean(r["auc"])),
                         "auc_sd": float(np.std(r["auc"], ddof=1)) if len(r["auc"]) > 1
                         else 0.0,
                         "auc": r["auc"], "memory": r.get("memory")}
        ours = libs.get("ctr_src")
        for lib, r in libs.items():
            if ours is None or lib == "ctr_src":
                continue
            by_seed = [statistics.median(p) / statistics.median(o)
                       for p, o in zip(r["seconds_by_seed"], ours["seconds_by_seed"])]
            ratio = rows[lib]["median_s"] / rows["ctr_src"]["median_s"]
            target = TARGETS.get((key, lib))
            rows[lib]["ratio"] = ratio
            rows[lib]["ratio_range"] = [min(by_seed), max(by_seed)]
            rows[lib]["target"] = target
            rows[lib]["target_met"] = None if target is None else bool(ratio >= target)
        table[key] = rows
    return table


def boundary_check_cost(data, repeats: int = 20) -> dict:
    """Milliseconds of what ``fit`` checks once per call: the labels and every index."""
    model = models.build("deepfm", field_dims=data.field_dims,
                         **CtrSrcRunner.KWARGS["deepfm"])
    out = {}
    for what, fn in (("labels", lambda: train._check_labels(data.train, "train")),
                     ("indices", lambda: train._check_inputs(model, data.train, "train"))):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        out[what] = (time.perf_counter() - start) / repeats * 1e3
    return out


def environment(args):
    versions = {"torch": torch.__version__}
    for mod in ("deepctr_torch", "torch_rechub"):
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - not installed
            pass
    env = {"python": platform.python_version(), "machine": platform.machine(),
           "cpu": _cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "threads": torch.get_num_threads(), "device": args.device, "versions": versions}
    if torch.device(args.device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_table(table, env, n_train):
    print(f"\n{env['cpu']} ({env['cpu_capability']}), {env['threads']} threads, "
          f"device {env['device']}; torch {env['versions']['torch']}; "
          f"{n_train:,} training rows, batch {BATCH}")
    head = (f"{'model':<10}{'library':<28}{'s/epoch':>9}{'range':>15}{'samples/s':>11}"
            f"{'test AUC':>17}{'+MiB':>9}{'ctr_src is':>12}")
    print(head)
    print("-" * len(head))
    for key, rows in table.items():
        for lib, r in rows.items():
            mem = r.get("memory") or {}
            peak = mem.get("peak_gpu_mb", mem.get("extra_rss_mb"))
            ratio = r.get("ratio")
            verdict = ""
            if r.get("target") is not None:
                verdict = " ok" if r["target_met"] else f" < {r['target']:.2g}x"
            print(f"{key:<10}{lib:<28}{r['median_s']:>9.3f}"
                  f"{r['min_s']:>7.3f}-{r['max_s']:<7.3f}{r['samples_per_s']:>11,.0f}"
                  f"{r['auc_mean']:>10.4f}±{r['auc_sd']:.4f}"
                  f"{'' if peak is None else f'{peak:9.0f}':>9}"
                  f"{'' if ratio is None else f'{ratio:8.2f}x':>12}{verdict}")
    for lib, notes in DESIGN_NOTES.items():
        print(f"\n{lib}:")
        for note in notes:
            print(f"  - {note}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES),
                        choices=sorted(RUNNERS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=0,
                        help="train on the first ROWS training rows only (a smoke test)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the per-model memory probes (a subprocess each)")
    parser.add_argument("--check-cost", action="store_true",
                        help="also time ctr_src with the per-batch index checks on")
    parser.add_argument("--out", default=str(ROOT / "results" / "peers.json"))
    parser.add_argument("--probe-memory", nargs=2, metavar=("MODEL", "LIBRARY"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is warm-up)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA device")
    if args.probe_memory:
        print(json.dumps(probe_memory(*args.probe_memory, args.device, args.rows)))
        return 0
    libraries = list(args.libraries)
    if args.check_cost and "ctr_src, checks every batch" not in libraries:
        libraries.insert(1, "ctr_src, checks every batch")
    for lib in list(libraries):
        why = available(lib)
        if why:
            print(f"skipping {why}", file=sys.stderr)
            libraries.remove(lib)
    data = load_ctr()
    if args.rows:
        data.train = data.train.subset(slice(0, args.rows))
    n_train = len(data.train)
    results = {}
    for key in args.models:
        print(f"{key}: training {', '.join(lib for lib in libraries if supports(lib, key))}"
              f" ({args.seeds} seeds x {args.epochs} epochs, interleaved)", file=sys.stderr)
        results[key] = run_model(key, libraries, data, args)
        if not args.no_memory:
            for lib in results[key]:
                results[key][lib]["memory"] = memory(key, lib, args)
    env = environment(args)
    table = summarise(results, n_train)
    print_table(table, env, n_train)
    checks = boundary_check_cost(data)
    print(f"\nchecked once per fit, not per batch: labels {checks['labels']:.2f} ms, "
          f"indices {checks['indices']:.2f} ms for {n_train:,} rows")
    settings = {"embed_dim": EMBED, "mlp_dims": list(MLP_DIMS), "dropout": DROPOUT,
                "attention_dim": ATTENTION, "lr": LR, "batch_size": BATCH,
                "epochs": args.epochs, "seeds": args.seeds, "train_rows": n_train,
                "command": "python benchmarks/peers.py " + " ".join(argv or sys.argv[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps({"environment": env, "settings": settings, "models": table,
                               "boundary_checks_ms": checks,
                               "design_notes": DESIGN_NOTES, "raw": results}, indent=1))
    os.replace(tmp, out)  # never a half-written results file
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
