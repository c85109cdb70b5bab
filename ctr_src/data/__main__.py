"""Command line: ``python -m ctr_src.data fetch [--source auto|grouplens|recbole] [--force]``."""

from __future__ import annotations

import argparse
import sys

from . import movielens


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctr_src.data",
                                     description="Fetch and verify MovieLens-100K for the book.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download, verify and cache MovieLens-100K")
    f.add_argument("--source", default="auto", choices=["auto", "grouplens", "recbole"])
    f.add_argument("--force", action="store_true", help="fetch again even if a verified cache exists")
    f.add_argument("--data-dir", default=None, help="cache folder (default: data/ of the checkout)")
    f.add_argument("--url", default=None, help="another address of ml-100k.zip (e.g. file:///...)")
    i = sub.add_parser("info", help="show the cached tables and their checksums")
    i.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            movielens.fetch(args.source, args.data_dir, force=args.force, url=args.url)
        else:
            ml = movielens.load_movielens(args.data_dir)
            print(f"cache: {movielens.cache_dir(args.data_dir) / movielens.CACHE_NAME}")
            for name in movielens.TABLES:
                df = getattr(ml, name)
                print(f"{name}: {len(df)} rows, sha256 {movielens._sha256(movielens.canonical_csv(df))}")
    except (movielens.DataError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
