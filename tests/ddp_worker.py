"""Trained by ``tests/test_distributed.py`` under torchrun (not a test file).

``torchrun --nproc_per_node=2 tests/ddp_worker.py OUT`` trains the small
DeepFM of :func:`build` on :func:`make_data` with :data:`SETTINGS` through
``fit`` and saves each rank's weights and history to ``OUT/rank{r}.pt``;
then it calls ``fit`` once more with a ``batch_size`` that differs between
the ranks and saves the error each rank raised to ``OUT/error{r}.txt``.
The test runs the same :func:`build`, :func:`make_data` and
:data:`SETTINGS` in one process and compares.
"""

import sys
from pathlib import Path

import torch

from ctr_src import distributed, models
from ctr_src.data import TensorData
from ctr_src.train import fit
from ctr_src.utils import seed_everything

DIMS = [7, 5, 3, 4]
# 316 rows in global batches of 45: 7 full batches, split 23 + 22 rows
# between 2 ranks (an odd split), and a last batch of 1 row, which leaves
# rank 1 an empty shard
SETTINGS = dict(epochs=12, batch_size=45, lr=0.03, patience=2, seed=11,
                progress=False)


def make_data(n_train: int = 316, n_valid: int = 200):
    """Synthetic clicks that depend on the fields (a logistic model)."""
    g = torch.Generator().manual_seed(5)
    effects = [torch.randn(d, generator=g) for d in DIMS]

    def rows(n):
        fields = torch.stack(
            [torch.randint(d, (n,), generator=g) for d in DIMS], 1)
        logit = sum(e[fields[:, i]] for i, e in enumerate(effects)) - 0.5
        label = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
        return TensorData(fields=fields, label=label)

    return rows(n_train), rows(n_valid)


def build():
    """The model, seeded. ``dropout=0``: each rank would draw its own masks
    (different random numbers from the one-process run), so the runs could
    not match."""
    seed_everything(7)
    return models.build("deepfm", field_dims=DIMS, embed_dim=4, mlp_dims=(8,),
                        dropout=0.0)


def main(out: Path) -> None:
    with distributed.process_group(backend="gloo") as joined:
        assert joined, "run me with torchrun"
        r = distributed.rank()
        train, valid = make_data()
        model = build()
        history = fit(model, train, valid, **SETTINGS)
        torch.save({"state": model.state_dict(), "records": history.records,
                    "best_epoch": history.best_epoch,
                    "stopped_early": history.stopped_early,
                    "world_size": distributed.world_size()},
                   out / f"rank{r}.pt")
        try:
            fit(build(), train, valid, **dict(SETTINGS, batch_size=40 + r))
        except ValueError as exc:
            (out / f"error{r}.txt").write_text(str(exc))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
