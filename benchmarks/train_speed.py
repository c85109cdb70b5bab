"""Seconds per training epoch of every book model on MovieLens-100K (CPU or GPU).

Usage: ``python benchmarks/train_speed.py [--device cuda] [--epochs 3] [--models lr fm deepfm]``

Speed is measured here, never in tests. Each model is trained with the book's settings
(:data:`ctr_src.experiments.SETTINGS`) for a few epochs without early stopping; the first
epoch is reported separately (it includes warm-up such as CUDA kernel loading).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from ctr_src import experiments, models, train
from ctr_src.data import load_ctr
from ctr_src.utils import count_parameters, default_device, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: default_device())")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=[m for m in experiments.SETTINGS if not m.startswith("din")])
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else default_device()
    data = load_ctr()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({name}); torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"{'model':<14}{'params':>9}{'1st epoch s':>13}{'s / epoch':>11}{'valid AUC':>11}")
    for key in args.models:
        seed_everything(2024)
        model = models.build(key, field_dims=data.field_dims, **experiments.SETTINGS[key]["model"]).to(device)
        fit_kwargs = dict(experiments.SETTINGS[key]["fit"], epochs=args.epochs, patience=args.epochs + 1)
        start = time.perf_counter()
        history = train.fit(model, data.train, data.valid, device=device, progress=False, **fit_kwargs)
        _ = time.perf_counter() - start
        secs = history.column("seconds")
        rest = sum(secs[1:]) / max(1, len(secs) - 1)
        print(f"{key:<14}{count_parameters(model):>9}{secs[0]:>13.3f}{rest:>11.3f}"
              f"{history.records[-1]['valid_auc']:>11.4f}")


if __name__ == "__main__":
    main()
