"""The book's standard training runs, so every chapter trains a model the same way.

:data:`SETTINGS` holds, per registered model, the model arguments and the trainer
arguments the book uses. :func:`run` seeds, builds, trains and tests one model and
returns a :class:`Result`; :func:`results_table` lines several results up. A chapter
that compares with an earlier chapter's model re-runs it with the same settings and
seed, so the same numbers appear wherever a model does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from . import models
from .reference import book_seed
from .train import History, evaluate, fit
from .utils import count_parameters, default_device, seed_everything

FIT = dict(epochs=20, batch_size=1024, lr=1e-3, weight_decay=0.0, patience=2)

#: Per model: ``{"model": kwargs for models.build, "fit": kwargs for train.fit}``.
SETTINGS: dict[str, dict] = {
    "lr": {"model": {}, "fit": dict(FIT, lr=1e-2)},
    "fm": {"model": dict(embed_dim=16), "fit": dict(FIT)},
    "ffm": {"model": dict(embed_dim=4), "fit": dict(FIT)},
    # AFM averages its P pair vectors (weights sum to 1), so its interaction term starts ~P
    # times smaller than FM's and learns slowly at lr 1e-3; 5e-3 fixes that (chapter 4)
    "afm": {"model": dict(embed_dim=16, attention_dim=16, dropout=0.1), "fit": dict(FIT, lr=5e-3)},
    "ipnn": {"model": dict(embed_dim=16, mlp_dims=(64, 32), dropout=0.1), "fit": dict(FIT)},
    "opnn": {"model": dict(embed_dim=16, mlp_dims=(64, 32), dropout=0.1, kernel="mat"), "fit": dict(FIT)},
    "pnn": {"model": dict(embed_dim=16, mlp_dims=(64, 32), dropout=0.1, kernel="mat"), "fit": dict(FIT)},
    "wide_deep": {"model": dict(embed_dim=16, mlp_dims=(64, 32), dropout=0.1), "fit": dict(FIT)},
    "embedding_mlp": {"model": dict(embed_dim=16, mlp_dims=(64, 32), dropout=0.1), "fit": dict(FIT)},
    "deepfm": {"model": dict(embed_dim=16, mlp_dims=(64, 32), dropout=0.1), "fit": dict(FIT)},
    # DIN and its base model read histories of (item, genre) pairs: seq_fields (1, 7) are the
    # positions of item_id and genre in DEFAULT_FIELDS, as ctr_src.data.sequences.load_din builds them.
    "din_base": {"model": dict(embed_dim=16, mlp_dims=(80, 40), pooling="sum", activation="prelu",
                               seq_fields=(1, 7)), "fit": dict(FIT)},
    "din": {"model": dict(embed_dim=16, mlp_dims=(80, 40), attention_dims=(36,), activation="dice",
                          softmax=False, seq_fields=(1, 7)), "fit": dict(FIT)},
}


@dataclass
class Result:
    """A trained model, its history and its test metrics."""

    name: str
    model: models.CTRModel
    history: History
    test: dict[str, float]
    parameters: int

    def row(self) -> dict:
        r = {"model": self.name, "test AUC": self.test["auc"], "test logloss": self.test["logloss"]}
        if "gauc" in self.test:
            r["test GAUC"] = self.test["gauc"]
        r.update({"parameters": self.parameters, "epochs": len(self.history),
                  "best epoch": self.history.best_epoch,
                  "s / epoch": self.history.seconds_per_epoch})
        return r


def run(name: str, data, *, label: str | None = None, seed: int | None = None, device=None,
        progress: bool = False, gauc: bool = False, model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None) -> Result:
    """Seed, build ``name`` with the book's settings (updated by ``model_kwargs``), train it
    on ``data.train`` with early stopping on ``data.valid``, and test it on ``data.test``.

    ``data`` is a :class:`~ctr_src.data.CTRData` (or anything with ``field_dims``, ``train``,
    ``valid`` and ``test``). ``seed`` defaults to the book's seed, 2024
    (:func:`ctr_src.reference.book_seed`; ``$CTR_SEED`` overrides it).
    """
    key = name.lower()
    if key not in SETTINGS:
        raise ValueError(f"no book settings for {name!r}; known: {', '.join(sorted(SETTINGS))}")
    mk = dict(SETTINGS[key]["model"], **(model_kwargs or {}))
    fk = dict(SETTINGS[key]["fit"], **(fit_kwargs or {}))
    device = device if device is not None else default_device()
    seed = book_seed() if seed is None else seed
    seed_everything(seed)
    model = models.build(key, field_dims=data.field_dims, **mk).to(device)
    history = fit(model, data.train, data.valid, seed=seed, device=device, progress=progress,
                  gauc=gauc, **fk)
    test = evaluate(model, data.test.to(device), gauc=gauc)
    return Result(label or name, model, history, test, count_parameters(model))


def results_table(results) -> pd.DataFrame:
    """One row per :class:`Result`, indexed by model name."""
    return pd.DataFrame([r.row() for r in results]).set_index("model")
