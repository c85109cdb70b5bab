"""The book's one protocol for training and comparing models.

* :data:`SETTINGS` -- per registered model, its architecture (``"model"``: kwargs for
  :func:`ctr_src.models.build`) and the untuned trainer defaults (``"fit"``).
* :data:`PROTOCOL` -- what every model of the leaderboard gets, the same for all: a grid of
  learning rate x weight decay searched on the **validation** set with the first seed,
  early stopping (patience 3) under an epoch cap of 100 that no chosen run reaches, then
  five seeds at the chosen point. Sequence data (the temporal split) is early-stopped and
  tuned on validation GAUC, everything else on validation AUC.
* :data:`ENTRIES` -- the models of the leaderboard: every model of chapters 2-7, a counting
  baseline, and the ablations (they reuse the tuned point of the model they ablate).
* :func:`run` -- seed, build, train and test one model with the tuned settings stored in
  ``results/leaderboard.json`` (the untuned defaults where the leaderboard has none). A
  chapter that trains a model gets the same numbers as the leaderboard's first seed.
* :class:`Leaderboard` -- the stored results: :meth:`~Leaderboard.table` (mean +- sd over
  seeds), :meth:`~Leaderboard.compare` (paired intervals), the tuning searches.

``make leaderboard`` (``tools/leaderboard.py``) runs the protocol and writes the results.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import models
from .reference import book_seed
from .train import History, evaluate, fit
from .utils import count_parameters, default_device, seed_everything

#: the committed results of ``make leaderboard``
RESULTS = Path(__file__).resolve().parents[1] / "results" / "leaderboard.json"

FIT = dict(epochs=100, batch_size=1024, lr=1e-3, weight_decay=0.0, patience=3)

#: the search and the seeds every leaderboard model gets
PROTOCOL = {
    "grid": {"lr": [1e-3, 3e-3, 1e-2], "weight_decay": [0.0, 1e-4, 3e-4]},
    "seeds": [2024, 2025, 2026, 2027, 2028],
    "epochs": FIT["epochs"],
    "patience": FIT["patience"],
    "batch_size": FIT["batch_size"],
    "monitor": {"random": "auc", "temporal": "gauc"},
    "baseline_priors": [1.0, 3.0, 10.0, 30.0, 100.0],
    "n_boot": 1000,
    "level": 0.95,
}

_MLP = dict(embed_dim=16, mlp_dims=(64, 32), dropout=0.1)

#: Per model: ``{"model": kwargs for models.build, "fit": untuned kwargs for train.fit}``.
SETTINGS: dict[str, dict] = {
    "lr": {"model": {}, "fit": dict(FIT)},
    "fm": {"model": dict(embed_dim=16), "fit": dict(FIT)},
    "ffm": {"model": dict(embed_dim=4), "fit": dict(FIT)},
    "afm": {"model": dict(embed_dim=16, attention_dim=16, dropout=0.1), "fit": dict(FIT)},
    "ipnn": {"model": dict(_MLP), "fit": dict(FIT)},
    "opnn": {"model": dict(_MLP, kernel="mat"), "fit": dict(FIT)},
    "pnn": {"model": dict(_MLP, kernel="mat"), "fit": dict(FIT)},
    "wide_deep": {"model": dict(_MLP), "fit": dict(FIT)},
    "fwfm": {"model": dict(embed_dim=16), "fit": dict(FIT)},
    "embedding_mlp": {"model": dict(_MLP), "fit": dict(FIT)},
    "deepfm": {"model": dict(_MLP), "fit": dict(FIT)},
    # DIN and its base model read histories of (item, genre) pairs: seq_fields (1, 7) are the
    # positions of item_id and genre in DEFAULT_FIELDS, as ctr_src.data.sequences.load_din builds them.
    "din_base": {"model": dict(embed_dim=16, mlp_dims=(80, 40), pooling="sum", activation="prelu",
                               seq_fields=(1, 7)), "fit": dict(FIT)},
    "din": {"model": dict(embed_dim=16, mlp_dims=(80, 40), attention_dims=(36,), activation="dice",
                          softmax=False, seq_fields=(1, 7)), "fit": dict(FIT)},
}


@dataclass(frozen=True)
class Entry:
    """One model of the leaderboard.

    ``key`` names it in the results; ``model`` is the registry name (``"mean"`` for the
    counting baseline :class:`~ctr_src.models.MeanBaseline`); ``split`` is ``"random"``
    (chapters 2-6) or ``"temporal"`` (chapter 7, with behaviour histories); ``crosses``
    adds Wide & Deep's hand-crafted crosses; ``model_kwargs`` change the architecture of
    :data:`SETTINGS`; an ablation names in ``tuned_as`` the entry whose tuned learning rate
    and weight decay it reuses (it changes one thing, so it is not re-tuned); ``init_from``
    names an entry (FM) that is first trained with the same seed at its own chosen point
    and whose embedding table then initialises this model's (FNN-style pre-training).
    """

    key: str
    label: str
    model: str
    split: str = "random"
    crosses: bool = False
    model_kwargs: tuple = ()
    tuned_as: str | None = None
    chapter: int = 0
    init_from: str | None = None

    @property
    def kwargs(self) -> dict:
        return dict(self.model_kwargs)

    @property
    def monitor(self) -> str:
        return PROTOCOL["monitor"][self.split]


ENTRIES: list[Entry] = [
    Entry("mean", "User + item mean", "mean", chapter=8),
    Entry("lr", "LR", "lr", chapter=2),
    Entry("fm", "FM", "fm", chapter=3),
    Entry("ffm", "FFM", "ffm", chapter=3),
    Entry("fwfm", "FwFM", "fwfm", chapter=4),
    Entry("afm", "AFM", "afm", chapter=4),
    Entry("afm_no_attention", "AFM without attention", "afm",
          model_kwargs=(("attention", False),), tuned_as="afm", chapter=4),
    Entry("ipnn", "IPNN", "ipnn", chapter=5),
    Entry("opnn", "OPNN", "opnn", chapter=5),
    Entry("opnn_vec", "OPNN (vec)", "opnn", model_kwargs=(("kernel", "vec"),),
          tuned_as="opnn", chapter=5),
    Entry("opnn_num", "OPNN (num)", "opnn", model_kwargs=(("kernel", "num"),),
          tuned_as="opnn", chapter=5),
    Entry("ipnn_fm_init", "IPNN, FM-initialised", "ipnn", tuned_as="ipnn",
          init_from="fm", chapter=5),
    Entry("pnn", "PNN*", "pnn", chapter=5),
    Entry("embedding_mlp", "Embedding + MLP", "embedding_mlp", chapter=6),
    Entry("fnn", "Embedding + MLP, FM-initialised", "embedding_mlp",
          tuned_as="embedding_mlp", init_from="fm", chapter=6),
    Entry("wide_deep", "Wide & Deep", "wide_deep", chapter=6),
    Entry("wide_deep_crosses", "Wide & Deep + crosses", "wide_deep", crosses=True, chapter=6),
    Entry("deepfm", "DeepFM", "deepfm", chapter=6),
    Entry("deepfm_separate", "DeepFM, separate tables", "deepfm",
          model_kwargs=(("shared_embedding", False),), tuned_as="deepfm", chapter=6),
    Entry("mean_temporal", "User + item mean", "mean", split="temporal", chapter=8),
    Entry("lr_temporal", "LR", "lr", split="temporal", chapter=8),
    Entry("fm_temporal", "FM", "fm", split="temporal", chapter=8),
    Entry("deepfm_temporal", "DeepFM", "deepfm", split="temporal", chapter=8),
    Entry("din_base", "Base (sum pooling)", "din_base", split="temporal", chapter=7),
    Entry("din", "DIN", "din", split="temporal", chapter=7),
    Entry("din_prelu", "DIN with PReLU", "din", split="temporal",
          model_kwargs=(("activation", "prelu"),), tuned_as="din", chapter=7),
    Entry("din_softmax", "DIN with softmax", "din", split="temporal",
          model_kwargs=(("softmax", True),), tuned_as="din", chapter=7),
]
ENTRY: dict[str, Entry] = {e.key: e for e in ENTRIES}


def entry(key: str) -> Entry:
    if key not in ENTRY:
        raise KeyError(f"no leaderboard entry {key!r}; known: {', '.join(ENTRY)}")
    return ENTRY[key]


def _primary_entry(name: str, split: str, crosses: bool) -> Entry | None:
    """The tuned entry of registered model ``name`` on ``split`` (ablations excluded)."""
    for e in ENTRIES:
        if (e.model == name and e.split == split and e.crosses == crosses
                and e.tuned_as is None and not e.model_kwargs):
            return e
    return None


# ----------------------------------------------------------------------------- one run

@dataclass
class Result:
    """A trained model, its history and its test metrics."""

    name: str
    model: models.CTRModel
    history: History
    test: dict[str, float]
    parameters: int
    fit_kwargs: dict = field(default_factory=dict)

    def row(self) -> dict:
        r = {"model": self.name, "test AUC": self.test["auc"], "test logloss": self.test["logloss"]}
        if "gauc" in self.test:
            r["test GAUC"] = self.test["gauc"]
        r.update({"parameters": self.parameters, "epochs": len(self.history),
                  "best epoch": self.history.best_epoch})
        return r


def tuned_fit(name: str, split: str = "random", crosses: bool = False) -> dict:
    """The trainer kwargs of model ``name`` under the protocol: :data:`SETTINGS` with the
    learning rate and weight decay chosen by the stored leaderboard's search (untuned
    defaults if the leaderboard does not have the model), early-stopped on the split's
    monitored metric."""
    key = name.lower()
    if key not in SETTINGS:
        raise ValueError(f"no book settings for {name!r}; known: {', '.join(sorted(SETTINGS))}")
    fk = dict(SETTINGS[key]["fit"], monitor=PROTOCOL["monitor"].get(split, "auc"))
    e = _primary_entry(key, split, crosses)
    board = Leaderboard.load_if_present()
    if e is not None and board is not None and e.key in board.entries:
        fk.update(board.chosen(e.key))
    return fk


def run(name: str, data, *, label: str | None = None, seed: int | None = None, device=None,
        progress: bool = False, gauc: bool = False, model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None) -> Result:
    """Seed, build ``name`` with the book's settings (updated by ``model_kwargs``), train it
    on ``data.train`` with early stopping on ``data.valid``, and test it on ``data.test``.

    The learning rate and weight decay are the ones the leaderboard's search chose for
    this model on this split (:func:`tuned_fit`); ``fit_kwargs`` override them. ``data`` is
    a :class:`~ctr_src.data.CTRData` (or anything with ``field_dims``, ``train``, ``valid``
    and ``test``). ``seed`` defaults to the book's seed, 2024
    (:func:`ctr_src.reference.book_seed`; ``$CTR_SEED`` overrides it), the leaderboard's
    first seed.
    """
    key = name.lower()
    split = getattr(data, "split", "random")
    crosses = hasattr(data, "cross_dims") and bool((model_kwargs or {}).get("cross_dims"))
    fk = dict(tuned_fit(key, split, crosses), **(fit_kwargs or {}))
    gauc = gauc or fk.get("monitor") == "gauc"
    mk = dict(SETTINGS[key]["model"], **(model_kwargs or {}))
    device = device if device is not None else default_device()
    seed = book_seed() if seed is None else seed
    seed_everything(seed)
    model = models.build(key, field_dims=data.field_dims, **mk).to(device)
    history = fit(model, data.train, data.valid, seed=seed, device=device, progress=progress,
                  gauc=gauc, **fk)
    test = evaluate(model, data.test.to(device), gauc=gauc)
    return Result(label or name, model, history, test, count_parameters(model), fk)


def results_table(results) -> pd.DataFrame:
    """One row per :class:`Result`, indexed by model name."""
    return pd.DataFrame([r.row() for r in results]).set_index("model")


# ----------------------------------------------------------------------------- the protocol

def load_entry_data(e: Entry, device=None):
    """The data an entry trains on: the random split (with crosses if asked) or the
    temporal split with behaviour histories."""
    from .data import load_ctr
    from .data.ctr import add_crosses
    from .data.sequences import load_din

    if e.split == "temporal":
        return load_din(device=device)
    data = load_ctr(device=device)
    return add_crosses(data)[0] if e.crosses else data


def train_entry(e: Entry, data, *, lr: float | None = None, weight_decay: float | None = None,
                prior: float | None = None, init_point: dict | None = None, seed: int,
                device="cpu") -> dict:
    """Train (or, for the baseline, count) one entry once; return its record and test logits.

    The record holds the settings, the validation and test metrics, the best epoch, the
    epochs run, the seconds per epoch and the parameter count. An entry with ``init_from``
    first trains that entry with the same ``seed`` at ``init_point`` (its chosen learning
    rate and weight decay) and starts from a copy of its embedding table.
    """
    from .train import predict

    gauc = e.split == "temporal"
    start = time.perf_counter()
    if e.model == "mean":
        names = list(data.field_names)
        model = models.MeanBaseline.from_counts(
            data.field_dims, data.train, names.index("user_id"), names.index("item_id"),
            prior=prior)
        valid = evaluate(model, data.valid, gauc=gauc)
        rec = {"prior": prior, "best_epoch": 0, "epochs": 0, "seconds_per_epoch": 0.0,
               "parameters": int(model.user_logit.numel() + model.item_logit.numel() + 1)}
    else:
        mk = dict(SETTINGS[e.model]["model"], **e.kwargs)
        if e.crosses:
            mk["cross_dims"] = data.cross_dims
        fk = dict(FIT, lr=lr, weight_decay=weight_decay, monitor=e.monitor)
        source = None
        if e.init_from is not None:
            if init_point is None:
                raise ValueError(f"entry {e.key!r} starts from {e.init_from!r}: pass its "
                                 "chosen point as init_point={'lr': ..., 'weight_decay': ...}")
            source = _trained(entry(e.init_from), data, seed, device, **init_point)
        seed_everything(seed)
        model = models.build(e.model, field_dims=data.field_dims, **mk).to(device)
        if source is not None:
            model.embedding.load_state_dict(source.embedding.state_dict())
        history = fit(model, data.train, data.valid, seed=seed, device=device, progress=False,
                      gauc=gauc, **fk)
        valid = {k.removeprefix("valid_"): v for k, v in history.best.items()
                 if k.startswith("valid_")}
        rec = {"lr": lr, "weight_decay": weight_decay, "best_epoch": history.best_epoch,
               "epochs": len(history), "seconds_per_epoch": history.seconds_per_epoch,
               "parameters": count_parameters(model)}
    test = evaluate(model, data.test, gauc=gauc)
    logits = predict(model, data.test).numpy().astype(np.float32)
    rec.update({"entry": e.key, "seed": seed, "valid": valid, "test": test,
                "seconds": time.perf_counter() - start})
    return {"record": rec, "logits": logits}


def _trained(e: Entry, data, seed: int, device, *, lr: float, weight_decay: float):
    """Entry ``e`` trained once with ``seed`` at (lr, weight_decay), as in the seeds phase."""
    seed_everything(seed)
    model = models.build(e.model, field_dims=data.field_dims,
                         **dict(SETTINGS[e.model]["model"], **e.kwargs)).to(device)
    fit(model, data.train, data.valid, seed=seed, device=device, progress=False,
        gauc=e.split == "temporal",
        **dict(FIT, lr=lr, weight_decay=weight_decay, monitor=e.monitor))
    return model


def search_points(e: Entry) -> list[dict]:
    """The points of the search an entry gets (the baseline: its shrinkage prior)."""
    if e.model == "mean":
        return [{"prior": p} for p in PROTOCOL["baseline_priors"]]
    g = PROTOCOL["grid"]
    return [{"lr": lr, "weight_decay": wd} for lr in g["lr"] for wd in g["weight_decay"]]


def choose(e: Entry, records: list[dict]) -> dict:
    """The search point with the best validation value of the entry's monitored metric
    (ties: the earlier point of the grid)."""
    best = max(records, key=lambda r: r["valid"][e.monitor])
    keys = ("prior",) if e.model == "mean" else ("lr", "weight_decay")
    return {k: best[k] for k in keys}


# ----------------------------------------------------------------------------- the results

def _fmt(mean: float, sd: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


class Leaderboard:
    """The stored results of ``make leaderboard`` (``results/leaderboard.json``)."""

    _cache: dict = {}

    def __init__(self, data: dict):
        self.data = data
        self.entries: dict = data["entries"]
        self.protocol: dict = data["protocol"]
        self.environment: dict = data["environment"]
        self.comparisons: dict = data["comparisons"]

    @classmethod
    def load(cls, path: str | Path = RESULTS) -> "Leaderboard":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"no leaderboard at {path}; it is committed with the book -- restore it with "
                "`git checkout results/leaderboard.json` or regenerate it with `make leaderboard`")
        key = (str(path), path.stat().st_mtime_ns)
        if key not in cls._cache:
            cls._cache[key] = cls(json.loads(path.read_text()))
        return cls._cache[key]

    @classmethod
    def load_if_present(cls, path: str | Path = RESULTS) -> "Leaderboard | None":
        return cls.load(path) if Path(path).exists() else None

    def chosen(self, key: str) -> dict:
        """The search point the protocol chose for ``key`` (for an ablation: its parent's)."""
        return dict(self._entry(key)["chosen"])

    def _entry(self, key: str) -> dict:
        if key not in self.entries:
            raise KeyError(f"no entry {key!r} in the leaderboard; it has {', '.join(self.entries)}")
        return self.entries[key]

    def runs(self, key: str) -> pd.DataFrame:
        """One row per seed: test and (best) validation metrics, best epoch, epochs,
        seconds per epoch."""
        rows = []
        for r in self._entry(key)["runs"]:
            row = {"seed": r["seed"], **{f"test {k}": v for k, v in r["test"].items()},
                   **{f"valid {k}": v for k, v in r["valid"].items()},
                   "best epoch": r["best_epoch"], "epochs": r["epochs"],
                   "s / epoch": r["seconds_per_epoch"]}
            rows.append(row)
        return pd.DataFrame(rows).set_index("seed")

    def search(self, key: str) -> pd.DataFrame:
        """The validation search of ``key``: one row per point, the chosen one marked."""
        e = self._entry(key)
        rows = [dict(r["point"], **{f"valid {k}": v for k, v in r["valid"].items()},
                     **{"best epoch": r["best_epoch"], "epochs": r["epochs"],
                        "chosen": r["point"] == e["chosen"]}) for r in e["search"]]
        return pd.DataFrame(rows)

    def summary(self, key: str) -> dict:
        return dict(self._entry(key)["summary"])

    def table(self, keys=None, split: str | None = None, text: bool = True) -> pd.DataFrame:
        """Mean ± sd over the seeds of every entry in ``keys`` (default: all of ``split``).

        ``text=True`` gives "0.7890 ± 0.0012" strings for the page, ``text=False`` the
        numbers (columns ``AUC mean``, ``AUC sd``, ...).
        """
        if keys is None:
            keys = [k for k, v in self.entries.items() if split is None or v["split"] == split]
        rows = []
        for k in keys:
            e, s = self._entry(k), self._entry(k)["summary"]
            row = {"model": e["label"]}
            for m, name in (("auc", "AUC"), ("gauc", "GAUC"), ("logloss", "logloss")):
                if f"{m}_mean" not in s:
                    continue
                if text:
                    row[f"test {name}"] = _fmt(s[f"{m}_mean"], s[f"{m}_sd"])
                else:
                    row[f"{name} mean"], row[f"{name} sd"] = s[f"{m}_mean"], s[f"{m}_sd"]
            point = e["chosen"]
            row.update({"parameters": s["parameters"],
                        "s / epoch": round(s["seconds_per_epoch"], 2),
                        "best epochs": s["best_epochs"],
                        "lr": point.get("lr", "-"),
                        "weight decay": point.get("weight_decay", "-")})
            rows.append(row)
        return pd.DataFrame(rows).set_index("model")

    def compare(self, a: str, b: str, metric: str = "auc") -> dict:
        """Paired difference ``metric(a) - metric(b)`` with both intervals and a verdict.

        ``seed_low``/``seed_high``: the t-interval over the paired seeds; ``boot_low``/
        ``boot_high``: the paired bootstrap over test rows (users for GAUC) of the
        seed-mean difference. ``verdict`` is ``"higher"``/``"lower"`` (``a`` against ``b``)
        only when **both** intervals exclude 0, else ``"indistinguishable"``.
        """
        for k in (a, b):
            self._entry(k)
        key, sign = f"{a}|{b}|{metric}", 1.0
        if key not in self.comparisons:
            key, sign = f"{b}|{a}|{metric}", -1.0
        if key not in self.comparisons:
            raise KeyError(f"no stored comparison of {a!r} and {b!r} on {metric!r} (entries of "
                           "different splits are not comparable)")
        c = self.comparisons[key]
        out = {"diff": sign * c["diff"]}
        for lo, hi in (("seed_low", "seed_high"), ("boot_low", "boot_high")):
            pair = sorted((sign * c[lo], sign * c[hi]))
            out[lo], out[hi] = pair
        out["verdict"] = _verdict(out)
        return out

    def comparison_table(self, pairs, metric: str = "auc") -> pd.DataFrame:
        """:meth:`compare` for several ``(a, b)`` pairs, labelled, one row each."""
        rows = []
        for a, b in pairs:
            c = self.compare(a, b, metric)
            rows.append({"comparison": f"{self.entries[a]['label']} − {self.entries[b]['label']}",
                         f"Δ {metric}": round(c["diff"], 4),
                         "seeds 95%": f"[{c['seed_low']:+.4f}, {c['seed_high']:+.4f}]",
                         "test rows 95%": f"[{c['boot_low']:+.4f}, {c['boot_high']:+.4f}]",
                         "verdict": c["verdict"]})
        return pd.DataFrame(rows).set_index("comparison")


def _verdict(c: dict) -> str:
    if c["seed_low"] > 0 and c["boot_low"] > 0:
        return "higher"
    if c["seed_high"] < 0 and c["boot_high"] < 0:
        return "lower"
    return "indistinguishable"


def summarise(records: list[dict]) -> dict:
    """Mean and sd (over seeds) of the test metrics, and what else the table shows."""
    out = {}
    for m in records[0]["test"]:
        values = np.array([r["test"][m] for r in records])
        out[f"{m}_mean"] = float(values.mean())
        out[f"{m}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    out["parameters"] = int(records[0]["parameters"])
    out["seconds_per_epoch"] = float(np.median([r["seconds_per_epoch"] for r in records]))
    out["best_epochs"] = [int(r["best_epoch"]) for r in records]
    out["epochs_run"] = [int(r["epochs"]) for r in records]
    return out


def paired_intervals(values_a, values_b, replicates_a, replicates_b,
                     level: float = 0.95) -> dict:
    """Both paired intervals of a difference ``a - b`` and the :meth:`Leaderboard.compare`
    verdict.

    ``values_*``: the metric of each seed (same seeds, same order); ``replicates_*``: the
    seed-mean metric on the same bootstrap redraws of the test set
    (:func:`ctr_src.metrics.bootstrap_replicates` with one ``seed``).
    """
    from . import metrics

    t = metrics.paired_t_interval(values_a, values_b, level)
    d = np.asarray(replicates_a) - np.asarray(replicates_b)
    tail = (1 - level) / 2
    low, high = np.quantile(d, [tail, 1 - tail])
    out = {"diff": t["diff"], "seed_low": t["low"], "seed_high": t["high"],
           "boot_low": float(low), "boot_high": float(high)}
    out["verdict"] = _verdict(out)
    return out


def at_cap(records: list[dict]) -> list[dict]:
    """The runs whose best epoch is the last epoch allowed (the protocol forbids them)."""
    return [r for r in records if r.get("epochs", 0) and r["best_epoch"] >= PROTOCOL["epochs"]]

