"""Command line: train a registered model on MovieLens or your own Criteo-format logs, and
evaluate a checkpoint.

``python -m ctr_src train --data movielens|movielens-temporal|criteo:PATH --model NAME
[--epochs N] [--lr X] [--weight-decay X] [--batch-size N] [--patience N] [--seed N]
[--device DEV] [--embed-dim N] [--max-rows N] [--dense bucket|value|both]
[--min-count N] [--hash-size H] [--out DIR] [--quiet]``

seeds, builds ``NAME`` with :data:`ctr_src.experiments.SETTINGS` (``--embed-dim`` changes its
embedding size), trains it with :func:`ctr_src.train.fit` through :func:`ctr_src.experiments.run`
-- early stopping with the book's patience, the best epoch's weights restored, validation AUC
monitored (GAUC on ``movielens-temporal``) -- tests it, and writes ``DIR/metrics.json`` and
``DIR/model.pt``. On MovieLens the learning rate and weight decay default to the leaderboard's
chosen point (:func:`ctr_src.experiments.tuned_fit`); on Criteo-format data to the untuned
:data:`ctr_src.experiments.FIT`. The options override them.

``--dense``, ``--min-count`` and ``--hash-size`` (criteo:PATH only) are
:func:`ctr_src.data.load_criteo`'s ``dense``, ``min_count`` and ``hash_size``;
they are stored in the checkpoint's data spec, so ``evaluate`` reads the file
the same way. With ``--dense value`` or ``both``, a model that takes
``dense_fields`` (:class:`~ctr_src.models.WideAndDeep`) is built with the
real-valued fields (``CriteoData.value_fields``) as ``dense_fields``.

``python -m ctr_src evaluate --checkpoint DIR/model.pt [--data ...] [--max-rows N] [--out FILE]``
rebuilds the model from the checkpoint and prints its test metrics on the data it was
trained on (or on ``--data``, which must give the same ``field_dims``; a
criteo:PATH is then read with the checkpoint's ``--dense``, ``--min-count``
and ``--hash-size``).

Bad input (an unknown model or data form, a missing file, a DIN model without histories)
exits with status 2 and one line saying what is wrong and how to fix it. Files are written to
a temporary name and renamed into place, and only after training has finished, so an
interrupted or failed run leaves nothing half-written.

``torchrun --nproc_per_node=N -m ctr_src train ...`` trains data-parallel on
``N`` processes (:mod:`ctr_src.distributed`: gloo on the CPU, nccl and one GPU
per process with CUDA): ``--batch-size`` stays the global batch, split
between the processes; only rank 0 prints and writes the files.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__, distributed, experiments
from .data.criteo import DEFAULT_MIN_COUNT, DENSE_MODES
from .data.movielens import DataError
from .train import TrainingDiverged, evaluate
from .utils import count_parameters, default_device

#: the models that read behaviour histories (only ``movielens-temporal`` has them)
SEQUENCE_MODELS = ("din", "din_base")
DATA_FORMS = "movielens, movielens-temporal or criteo:PATH"
CHECKPOINT_FORMAT = "ctr_src.cli/1"
#: load_criteo's options the command line exposes, with their defaults
CRITEO_OPTIONS = {"dense": "bucket", "min_count": DEFAULT_MIN_COUNT,
                  "hash_size": None}


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- data

def parse_data(text: str, max_rows: int | None = None, **criteo) -> dict:
    """The data spec of ``--data``: ``{"kind": ..., "path": ...,
    "max_rows": ...}``.

    ``criteo`` holds :data:`CRITEO_OPTIONS` (``None``: the default); a
    criteo:PATH spec records all of them, with the defaults filled in.
    """
    unknown = set(criteo) - set(CRITEO_OPTIONS)
    if unknown:
        raise TypeError(f"unknown Criteo options {sorted(unknown)}")
    given = {k: v for k, v in criteo.items() if v is not None}
    if text in ("movielens", "movielens-temporal"):
        if max_rows is not None:
            raise UsageError(f"--max-rows applies to criteo:PATH only, not to --data {text}; "
                             "drop --max-rows")
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise UsageError(f"{flags}: for criteo:PATH only, not for --data "
                             f"{text}; drop it")
        return {"kind": text}
    if text.startswith("criteo:"):
        path = Path(text[len("criteo:"):]).expanduser()
        if not str(path) or text == "criteo:":
            raise UsageError("--data criteo:PATH needs a path, e.g. --data criteo:train.txt")
        if not path.is_file():
            raise UsageError(f"no Criteo-format file at {path}: check the path in "
                             f"--data criteo:PATH (a plain or .gz file)")
        return {"kind": "criteo", "path": str(path.resolve()),
                "max_rows": max_rows, **CRITEO_OPTIONS, **given}
    raise UsageError(f"unknown --data {text!r}; use {DATA_FORMS}")


def describe(spec: dict) -> str:
    """``--data`` as the user would write it again."""
    if spec["kind"] != "criteo":
        return spec["kind"]
    rows = f" (first {spec['max_rows']} rows)" if spec.get("max_rows") else ""
    opts = " ".join(f"--{k.replace('_', '-')} {spec[k]}"
                    for k, default in CRITEO_OPTIONS.items()
                    if spec.get(k, default) != default)
    return f"criteo:{spec['path']}{rows}" + (f" {opts}" if opts else "")


def load_data(spec: dict):
    """Load the data a spec names (on the CPU)."""
    if spec["kind"] == "movielens":
        from .data import load_ctr
        return load_ctr()
    if spec["kind"] == "movielens-temporal":
        from .data.sequences import load_din
        return load_din()
    from .data import load_criteo
    if not Path(spec["path"]).is_file():
        raise UsageError(f"no Criteo-format file at {spec['path']}: pass the file with "
                         "--data criteo:PATH")
    options = {k: spec.get(k, default)
               for k, default in CRITEO_OPTIONS.items()}
    return load_criteo(spec["path"], max_rows=spec.get("max_rows"), **options)


def takes_dense_fields(key: str) -> bool:
    """Whether the registered model ``key`` has a ``dense_fields`` argument."""
    params = inspect.signature(experiments.models.REGISTRY[key]).parameters
    return "dense_fields" in params


def model_name(name: str) -> str:
    key = name.lower().replace("-", "_")
    if key not in experiments.SETTINGS:
        raise UsageError(f"unknown model {name!r}; known models: "
                         f"{', '.join(sorted(experiments.SETTINGS))}")
    return key


def check_pairing(key: str, spec: dict) -> None:
    if key in SEQUENCE_MODELS and spec["kind"] != "movielens-temporal":
        raise UsageError(f"model {key!r} reads behaviour histories, which only the temporal "
                         f"split has: use --data movielens-temporal (not {describe(spec)})")


# ----------------------------------------------------------------------------- files

def write_atomic(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    write_atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def versions() -> dict:
    return {"ctr_src": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__}


def _device(text: str | None) -> torch.device:
    if text is None:
        return default_device()
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"unknown --device {text!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text} but no CUDA GPU is visible; use --device cpu")
    return device


def _metrics(record: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in record.items() if k.startswith(prefix)}


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k.upper() if k != 'logloss' else k} {v:.4f}" for k, v in metrics.items())


# ----------------------------------------------------------------------------- commands

def train(args) -> int:
    key = model_name(args.model)
    spec = parse_data(args.data, args.max_rows, dense=args.dense,
                      min_count=args.min_count, hash_size=args.hash_size)
    check_pairing(key, spec)
    model_kwargs = dict(experiments.SETTINGS[key]["model"])
    if args.embed_dim is not None:
        if "embed_dim" not in model_kwargs:
            raise UsageError(f"model {key!r} has no embeddings; drop --embed-dim")
        model_kwargs["embed_dim"] = args.embed_dim
    device = _device(args.device)
    if spec["kind"] == "criteo":  # the leaderboard's choice is MovieLens's: use the defaults
        fit_kwargs = dict(experiments.SETTINGS[key]["fit"], monitor="auc")
    else:
        split = "temporal" if spec["kind"] == "movielens-temporal" else "random"
        fit_kwargs = experiments.tuned_fit(key, split)
    for opt in ("epochs", "lr", "weight_decay", "batch_size", "patience"):
        if getattr(args, opt) is not None:
            fit_kwargs[opt] = getattr(args, opt)
    data = load_data(spec)
    value_fields = getattr(data, "value_fields", [])
    if value_fields and takes_dense_fields(key):  # raw values into the MLP
        model_kwargs["dense_fields"] = list(value_fields)
    seed = args.seed if args.seed is not None else experiments.book_seed()
    start = time.perf_counter()
    result = experiments.run(key, data, seed=seed, device=device, progress=not args.quiet,
                             model_kwargs=model_kwargs, fit_kwargs=fit_kwargs)
    seconds = time.perf_counter() - start
    history = result.history
    if not distributed.is_main():  # under torchrun: rank 0 reports and writes
        return 0
    out = Path(args.out)
    checkpoint = {"format": CHECKPOINT_FORMAT, "model": key, "model_kwargs": model_kwargs,
                  "field_dims": [int(d) for d in data.field_dims], "data": spec,
                  "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
                  "test": result.test, "ctr_src": __version__}
    report = {"model": key, "data": spec,
              "settings": {"model": model_kwargs, "fit": fit_kwargs, "seed": seed,
                           "device": str(device),
                           "processes": distributed.world_size()},
              "best_epoch": history.best_epoch, "epochs": len(history),
              "stopped_early": history.stopped_early,
              "valid": _metrics(history.best, "valid_"), "test": result.test,
              "parameters": count_parameters(result.model), "seconds": round(seconds, 3),
              "history": history.records, "versions": versions()}
    write_atomic(out / "model.pt", lambda f: torch.save(checkpoint, f))
    write_json(out / "metrics.json", report)
    print(f"{key} on {describe(spec)}: best epoch {history.best_epoch} of {len(history)}, "
          f"{report['parameters']:,} parameters, {seconds:.1f} s")
    print(f"  valid: {_fmt(report['valid'])}")
    print(f"  test:  {_fmt(result.test)}")
    print(f"  wrote {out / 'metrics.json'} and {out / 'model.pt'}")
    return 0


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}: pass the model.pt that "
                         "'python -m ctr_src train --out DIR' wrote, e.g. --checkpoint DIR/model.pt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc}); "
                         "train again to write a new one") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a checkpoint of 'python -m ctr_src train' "
                         f"(format {CHECKPOINT_FORMAT}); train again to write one")
    return ckpt


def evaluate_cmd(args) -> int:
    path = Path(args.checkpoint)
    ckpt = load_checkpoint(path)
    key = ckpt["model"]
    if args.data is not None:
        spec = parse_data(args.data, args.max_rows)
        if spec["kind"] == "criteo" and ckpt["data"]["kind"] == "criteo":
            # the file is read as the model's training data was
            spec.update({k: ckpt["data"].get(k, default)
                         for k, default in CRITEO_OPTIONS.items()})
    else:
        spec = dict(ckpt["data"])
        if args.max_rows is not None:
            if spec["kind"] != "criteo":
                raise UsageError("--max-rows applies to criteo:PATH only; drop --max-rows")
            spec["max_rows"] = args.max_rows
    check_pairing(key, spec)
    device = _device(args.device)
    data = load_data(spec)
    dims = [int(d) for d in data.field_dims]
    if dims != ckpt["field_dims"]:
        raise UsageError(
            f"the checkpoint's {key!r} was trained on data with field_dims {ckpt['field_dims']}, "
            f"but {describe(spec)} gives {dims}: evaluate on the data it was trained on "
            f"({describe(ckpt['data'])}, the same --max-rows)")
    model = experiments.models.build(key, field_dims=dims, **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    test = evaluate(model, data.test.to(device), gauc=spec["kind"] == "movielens-temporal")
    print(f"{key} from {path} on {describe(spec)}: test {_fmt(test)}")
    if args.out:
        write_json(Path(args.out), {"model": key, "checkpoint": str(path.resolve()),
                                    "data": spec, "test": test, "versions": versions()})
        print(f"  wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------- parser

def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _hash_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an integer") from None
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"must be 2 or more (index 0 is kept for an empty value), "
            f"got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ctr_src",
                                description="Train and evaluate the book's CTR models.")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a model, write metrics.json and model.pt")
    t.add_argument("--data", required=True, help=DATA_FORMS)
    t.add_argument("--model", required=True,
                   help=f"one of: {', '.join(sorted(experiments.SETTINGS))}")
    t.add_argument("--epochs", type=_positive(int), help="most epochs (default 100)")
    t.add_argument("--lr", type=_positive(float), help="learning rate")
    t.add_argument("--weight-decay", type=_non_negative, help="Adam weight decay")
    t.add_argument("--batch-size", type=_positive(int), help="default 1024")
    t.add_argument("--patience", type=_positive(int), help="early-stopping patience (default 3)")
    t.add_argument("--seed", type=int, help="seed of the model and minibatches (default 2024)")
    t.add_argument("--device", help="cpu, cuda, cuda:N (default: a GPU if visible)")
    t.add_argument("--embed-dim", type=_positive(int), help="embedding size")
    t.add_argument("--max-rows", type=_positive(int), help="criteo:PATH: read the first N rows")
    t.add_argument("--dense", choices=DENSE_MODES,
                   help="criteo:PATH: integer features as buckets, "
                        "real values or both (default bucket)")
    t.add_argument("--min-count", type=_positive(int),
                   help=f"criteo:PATH: values seen fewer times in the "
                        f"training rows are <unk> (default "
                        f"{DEFAULT_MIN_COUNT})")
    t.add_argument("--hash-size", type=_hash_size,
                   help="criteo:PATH: hash each categorical field into H "
                        "indices (default: a vocabulary per field)")
    t.add_argument("--out", default="run", help="output folder (default ./run)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    e = sub.add_parser("evaluate", help="test metrics of a checkpoint")
    e.add_argument("--checkpoint", required=True, help="the model.pt that train wrote")
    e.add_argument("--data", help=f"{DATA_FORMS} (default: the checkpoint's data)")
    e.add_argument("--max-rows", type=_positive(int), help="criteo:PATH: read the first N rows")
    e.add_argument("--device", help="cpu, cuda, cuda:N (default: a GPU if visible)")
    e.add_argument("--out", help="also write the metrics to this JSON file")
    return p


def _process_group(device: str | None):
    """:func:`ctr_src.distributed.process_group`: gloo for ``--device cpu``,
    else the default (nccl where CUDA is visible); a half-set torchrun
    environment is a usage error."""
    try:
        distributed.launched()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    cpu = device is not None and device.startswith("cpu")
    return distributed.process_group("gloo" if cpu else None)


def main(argv=None) -> int:
    args = parser().parse_args(argv)  # bad options: argparse prints usage and exits 2
    try:
        if args.cmd == "train":
            with _process_group(args.device):
                return train(args)
        return evaluate_cmd(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:  # a malformed Criteo line, MovieLens not available offline
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc} Nothing was written.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
