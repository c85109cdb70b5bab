"""Time FM's pair sum: the naive all-pairs sum against Rendle's O(k n) identity (chapter 3).

Usage: ``python benchmarks/fm_identity.py [--device cuda] [--batch 256] [--k 16] [--max-n 4096]
[--threads 1] [--repeats 7]``

Both are vectorised PyTorch on a dense real-valued batch ``X`` (B, n) with latent vectors
``V`` (n, k):

* naive: every pair weight at once, ``W = triu(V V^T, 1)``, then ``sum_ij W_ij x_i x_j`` per
  row -- ``k n^2 + B n^2`` multiply-adds;
* identity: ``1/2 sum_f [(X V)^2 - X^2 V^2]`` -- ``2 B n k``; this is what
  :class:`ctr_src.layers.FMInteraction` computes on the embeddings ``e_i = v_i x_i``.

For every ``n`` (powers of two from 16) it prints the median wall-clock time of ``--repeats``
calls (after one warm-up call; CUDA is synchronised) and the speed-up, then the log-log slopes
fitted on the larger half of the sizes. Speed is measured here, never asserted in tests: with
cache sizes and call overheads in play the slopes of vectorised code drift from 2 and 1 (the
chapter times plain-Python loops instead, where they do not).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


def naive(X: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``sum_{i<j} <v_i, v_j> x_i x_j`` through the full matrix of pair weights: ``(B,)``."""
    W = torch.triu(V @ V.T, diagonal=1)
    return ((X @ W) * X).sum(1)


def identity(X: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Rendle's lemma: ``1/2 sum_f [(sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2]``: ``(B,)``."""
    return 0.5 * ((X @ V) ** 2 - (X ** 2) @ (V ** 2)).sum(1)


def median_seconds(fn, *args, repeats: int, device: torch.device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn(*args)
    sync()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        sync()
        runs.append(time.perf_counter() - start)
    return float(np.median(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--max-n", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no GPU; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({name}); torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"B = {args.batch}, k = {args.k}, float32")
    sizes = [16 * 2 ** i for i in range(20) if 16 * 2 ** i <= args.max_n]
    g = torch.Generator().manual_seed(0)
    rows = []
    print(f"{'n':>6}{'naive ms':>12}{'identity ms':>13}{'speed-up':>10}")
    for n in sizes:
        X = torch.randn(args.batch, n, generator=g).to(device)
        V = (torch.randn(n, args.k, generator=g) / args.k ** 0.5).to(device)
        a, b = naive(X, V), identity(X, V)
        scale = float((X.abs() @ V.abs()).pow(2).sum(1).max())
        if not torch.allclose(a, b, rtol=1e-3, atol=1e-4 * scale):
            raise SystemExit(f"n = {n}: naive and identity disagree (max |diff| {float((a - b).abs().max()):.3g})")
        tn = median_seconds(naive, X, V, repeats=args.repeats, device=device)
        ti = median_seconds(identity, X, V, repeats=args.repeats, device=device)
        rows.append((n, tn, ti))
        print(f"{n:>6}{tn * 1e3:>12.3f}{ti * 1e3:>13.3f}{tn / ti:>9.1f}x")
    ns, tn, ti = (np.array(c) for c in zip(*rows))
    big = ns >= ns[len(ns) // 2]
    if big.sum() >= 2:
        slope = lambda t: np.polyfit(np.log(ns[big]), np.log(t[big]), 1)[0]
        print(f"log-log slopes for n >= {ns[big][0]}: naive {slope(tn):.2f}, identity {slope(ti):.2f}")


if __name__ == "__main__":
    main()
