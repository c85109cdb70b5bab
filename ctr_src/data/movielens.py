"""MovieLens-100K: fetch, verify, cache and load the canonical tables.

Two routes end in the same three **canonical tables**:

* ``ratings``: 100,000 rows -- ``user_id, item_id, rating, timestamp`` (sorted by user, item);
* ``users``: 943 rows -- ``user_id, age, gender, occupation, zip_code``;
* ``items``: 1,682 rows -- ``item_id, title, release_year, genres`` (genres ``|``-joined
  in the order of GroupLens' ``u.genre``; the title without its trailing ``(year)``).

Route 1 downloads the official GroupLens archive ``ml-100k.zip``. Where that host cannot be
reached, route 2 takes the copy of the same data inside the ``recbole==1.2.1`` wheel on
PyPI (``pip download --no-deps``; ``recbole/dataset_example/ml-100k/``). Each table is
written as CSV into a temporary folder, its SHA-256 compared with the value below, and only
then is the folder renamed into place: a failed or corrupt download leaves no cache behind.

The data is never committed: the MovieLens licence forbids redistribution.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
#: MD5 that GroupLens publishes for ml-100k.zip (ml-100k.zip.md5).
GROUPLENS_MD5 = "0e33842e24a9c977be4e0107933c0723"
#: SHA-256 of ml-100k.zip (4,924,029 bytes), as recorded by other dataset loaders.
GROUPLENS_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
#: SHA-256 of the recbole 1.2.1 wheel as published on PyPI.
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/"

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")

TABLES = ("ratings", "users", "items")
COLUMNS = {
    "ratings": ["user_id", "item_id", "rating", "timestamp"],
    "users": ["user_id", "age", "gender", "occupation", "zip_code"],
    "items": ["item_id", "title", "release_year", "genres"],
}
ROWS = {"ratings": 100_000, "users": 943, "items": 1_682}
#: SHA-256 of each canonical CSV (UTF-8, ``\n`` line ends, header row, no index).
SHA256 = {
    "ratings": "f9d442df6d2259ed05546f2a3e3b9d13ffecb43cd6bd90ea60fb8ed84afcb7ac",
    "users": "f0666955a899ab27004d413eec2d92e393f5050879597e126ede637390e5a238",
    "items": "f0a5b60e02ded0affa61fc613d41a8d04d2b3669e8b0d8a3e1d88aa0b112d0e4",
}
CACHE_NAME = "ml-100k"
DOWNLOAD_TIMEOUT = 15  # seconds; one try per route, no retry storm


class DataError(RuntimeError):
    """A data file is missing, truncated, corrupt or not the expected one."""


class DataUnavailableError(DataError, ConnectionError):
    """The data is not cached and cannot be downloaded here (offline): both a
    :class:`DataError` and a :class:`ConnectionError`."""


# ----------------------------------------------------------------------------- locations

def default_data_dir() -> Path:
    """Where the cache lives: ``$CTR_DATA_DIR``, else the repository's ``data/`` folder
    (when ``ctr_src`` is used from a checkout), else ``~/.cache/ctr_src``."""
    env = os.environ.get("CTR_DATA_DIR")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists() and (repo / "ctr_src").is_dir():
        return repo / "data"
    return Path.home() / ".cache" / "ctr_src"


def cache_dir(data_dir: str | Path | None = None) -> Path:
    return Path(data_dir) if data_dir is not None else default_data_dir()


# ----------------------------------------------------------------------------- helpers

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_csv(df: pd.DataFrame) -> bytes:
    """The exact bytes a canonical table is stored (and checksummed) as."""
    return df.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _check_table(name: str, df: pd.DataFrame, expect_rows: bool = True) -> None:
    if list(df.columns) != COLUMNS[name]:
        raise DataError(f"{name}: columns {list(df.columns)}, expected {COLUMNS[name]}")
    if expect_rows and len(df) != ROWS[name]:
        raise DataError(f"{name}: {len(df)} rows, expected {ROWS[name]} -- the source file is "
                        f"truncated or not MovieLens-100K")


def _finish(ratings: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Put the three tables in canonical column order, dtypes and row order."""
    ratings = ratings[COLUMNS["ratings"]].astype("int64")
    ratings = ratings.sort_values(["user_id", "item_id"], kind="mergesort").reset_index(drop=True)
    users = users[COLUMNS["users"]].copy()
    users["user_id"] = users["user_id"].astype("int64")
    users["age"] = users["age"].astype("int64")
    for c in ("gender", "occupation", "zip_code"):
        users[c] = users[c].astype(str).str.strip()
    users = users.sort_values("user_id", kind="mergesort").reset_index(drop=True)
    items = items[COLUMNS["items"]].copy()
    items["item_id"] = items["item_id"].astype("int64")
    items["title"] = items["title"].astype(str).str.strip()
    items["release_year"] = items["release_year"].astype("Int64")
    items = items.sort_values("item_id", kind="mergesort").reset_index(drop=True)
    return {"ratings": ratings, "users": users, "items": items}


_VIDEO_SUFFIX = re.compile(r"\s*\(V\)$")
_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)$")


def split_title(title: str) -> tuple[str, int | None]:
    """GroupLens title -> (title without its trailing ``(year)``, that year or ``None``).

    GroupLens writes the film's year at the end of the title (``Toy Story (1995)``); one
    video release carries ``(V)`` after it (item 1412) and three titles end in a space
    (items 1128, 1201, 1635). The canonical year is the *title's* year, not the year of the
    ``release date`` column, which differs for 190 films (re-releases, festival dates).
    """
    t = _VIDEO_SUFFIX.sub("", title.strip())
    m = _YEAR_SUFFIX.search(t)
    if m is None:
        return t, None
    return t[: m.start()].strip(), int(m.group(1))


# ----------------------------------------------------------------------------- parsers

def _read_member(zf: zipfile.ZipFile, candidates: list[str]) -> bytes:
    names = set(zf.namelist())
    for c in candidates:
        if c in names:
            return zf.read(c)
    raise DataError(f"archive lacks {candidates[0]!r} -- it is not the expected MovieLens-100K archive")


def tables_from_grouplens_zip(archive: bytes | str | Path) -> dict[str, pd.DataFrame]:
    """Canonical tables from GroupLens' ``ml-100k.zip`` (``u.data``, ``u.user``, ``u.item``).

    ``u.item`` is Latin-1 and ``|``-separated: ``id|title (year)|release date|video release
    date|IMDb URL|`` then 19 genre flags in :data:`GENRES` order. The canonical title drops
    the trailing ``(year)``; the release year is the year of the release date (empty for
    item 267, whose title is ``unknown``).
    """
    raw = archive if isinstance(archive, bytes) else Path(archive).read_bytes()
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
        bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"the GroupLens archive is not a valid zip file ({exc}); the download "
                        f"was probably cut off -- run `python -m ctr_src.data fetch` again") from exc
    if bad is not None:
        raise DataError(f"the GroupLens archive is corrupt (CRC error in {bad}); fetch it again")
    with zf:
        data = _read_member(zf, ["ml-100k/u.data", "u.data"]).decode("latin-1")
        user = _read_member(zf, ["ml-100k/u.user", "u.user"]).decode("latin-1")
        item = _read_member(zf, ["ml-100k/u.item", "u.item"]).decode("latin-1")
    try:
        ratings = pd.read_csv(io.StringIO(data), sep="\t", header=None, names=COLUMNS["ratings"])
        users = pd.read_csv(io.StringIO(user), sep="|", header=None, names=COLUMNS["users"],
                            dtype={"zip_code": str})
        rows = []
        for line in item.splitlines():
            if not line.strip():
                continue
            parts = line.split("|")
            if len(parts) != 5 + len(GENRES):
                raise DataError(f"u.item: line {line[:40]!r}... has {len(parts)} fields, expected 24")
            title, year = split_title(parts[1])
            flags = [int(f) for f in parts[5:]]
            genres = "|".join(g for g, f in zip(GENRES, flags) if f == 1)
            rows.append((int(parts[0]), title, year, genres))
        items = pd.DataFrame(rows, columns=COLUMNS["items"])
        return _finish(ratings, users, items)
    except (ValueError, KeyError, pd.errors.ParserError) as exc:
        raise DataError(f"the GroupLens archive could not be parsed ({exc}); it is not MovieLens-100K "
                        f"or is corrupt -- fetch it again") from exc


def tables_from_recbole_wheel(wheel: bytes | str | Path) -> dict[str, pd.DataFrame]:
    """Canonical tables from ``recbole/dataset_example/ml-100k/`` inside the recbole wheel.

    RecBole's atomic files are tab-separated with typed headers (``user_id:token``) and UTF-8.
    Its item file already splits the title's ``(year)`` off into ``release_year``, except for
    item 1412 (year ``V``, the year left in the title), which :func:`split_title` finishes;
    item 267 is spelled ``unkonwn`` there and becomes GroupLens' ``unknown`` with no year.
    """
    raw = wheel if isinstance(wheel, bytes) else Path(wheel).read_bytes()
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile as exc:
        raise DataError(f"the recbole wheel is not a valid zip file ({exc}); delete it and fetch again") from exc

    def read(suffix: str) -> pd.DataFrame:
        text = _read_member(zf, [RECBOLE_PREFIX + "ml-100k." + suffix]).decode("utf-8")
        df = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False, quoting=3)
        df.columns = [c.split(":")[0] for c in df.columns]
        return df

    with zf:
        inter, user, item = read("inter"), read("user"), read("item")
    try:
        ratings = inter.rename(columns={})[["user_id", "item_id", "rating", "timestamp"]]
        ratings = ratings.astype(float).astype("int64")
        users = user.rename(columns={})[["user_id", "age", "gender", "occupation", "zip_code"]]
        titles, years = [], []
        for t, y in zip(item["movie_title"], item["release_year"]):
            if t == "unkonwn":  # RecBole's spelling of item 267, GroupLens' "unknown" (no year)
                t, y = "unknown", ""
            if not re.fullmatch(r"\d{4}", y):  # item 1412: "... (1995)" with year "V"
                t, y = split_title(t)
            titles.append(t)
            years.append(int(y) if y not in ("", None) else None)
        title = pd.Series(titles, index=item.index)
        year = pd.Series(years, index=item.index, dtype="Int64")
        genres = item["class"].str.split().str.join("|")
        unknown = sorted(set(g for gs in genres for g in gs.split("|")) - set(GENRES))
        if unknown:
            raise DataError(f"recbole item file has unexpected genres {unknown}")
        items = pd.DataFrame({"item_id": item["item_id"].astype("int64"), "title": title,
                              "release_year": year, "genres": genres})
        return _finish(ratings, users, items)
    except (ValueError, KeyError) as exc:
        raise DataError(f"the recbole wheel's ml-100k files could not be parsed ({exc})") from exc


# ----------------------------------------------------------------------------- downloads

def _download_grouplens(url: str, expected_md5: str | None) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp:
            raw = resp.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ConnectionError(f"could not download {url}: {exc}") from exc
    if expected_md5 is not None:
        md5 = hashlib.md5(raw).hexdigest()
        if md5 != expected_md5 or (url == GROUPLENS_URL and _sha256(raw) != GROUPLENS_SHA256):
            raise DataError(f"{url}: MD5 {md5} does not match the published {expected_md5} -- the "
                            f"download is truncated or altered; run `python -m ctr_src.data fetch` again")
    return raw


def _download_recbole_wheel(workdir: Path) -> bytes:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(workdir), RECBOLE_REQUIREMENT]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConnectionError(f"`pip download {RECBOLE_REQUIREMENT}` failed: {exc}") from exc
    wheel = workdir / RECBOLE_WHEEL
    if proc.returncode != 0 or not wheel.exists():
        raise ConnectionError(f"`pip download {RECBOLE_REQUIREMENT}` failed:\n{proc.stderr.strip()[-2000:]}")
    raw = wheel.read_bytes()
    digest = _sha256(raw)
    if digest != RECBOLE_WHEEL_SHA256:
        raise DataError(f"{RECBOLE_WHEEL}: SHA-256 {digest} is not the published {RECBOLE_WHEEL_SHA256}")
    return raw


# ----------------------------------------------------------------------------- cache

def _verify(tables: dict[str, pd.DataFrame], expected: dict[str, str | None]) -> dict[str, str]:
    digests = {}
    for name in TABLES:
        _check_table(name, tables[name], expect_rows=expected.get(name) is not None)
        digest = _sha256(canonical_csv(tables[name]))
        want = expected.get(name)
        if want is not None and digest != want:
            raise DataError(f"{name}: content SHA-256 {digest} differs from the expected {want} -- "
                            f"the source is not the canonical MovieLens-100K")
        digests[name] = digest
    return digests


def write_cache(tables: dict[str, pd.DataFrame], data_dir: str | Path | None = None,
                source: str = "", expected: dict[str, str | None] | None = None) -> Path:
    """Verify ``tables`` and write them atomically to ``<data_dir>/ml-100k/``.

    Everything is written into a temporary sibling folder first and renamed into place
    only after it verified; on any error that folder is removed, so no half-written cache
    is ever left behind.
    """
    expected = SHA256 if expected is None else expected
    root = cache_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / CACHE_NAME
    digests = _verify(tables, expected)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}.partial-", dir=root))
    old = None
    try:
        for name in TABLES:
            (tmp / f"{name}.csv").write_bytes(canonical_csv(tables[name]))
        manifest = {"source": source, "sha256": digests, "rows": {n: len(tables[n]) for n in TABLES}}
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            old = root / f".{CACHE_NAME}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def fetch(source: str = "auto", data_dir: str | Path | None = None, force: bool = False,
          url: str | None = None, verbose: bool = True) -> Path:
    """Download MovieLens-100K (if not cached), verify it and write the canonical tables.

    ``source`` is ``"auto"`` (GroupLens, then the recbole wheel), ``"grouplens"`` or
    ``"recbole"``. ``url`` overrides the GroupLens address (``CTR_MOVIELENS_URL`` too);
    the published MD5 is only checked for the official address. Returns the cache folder.
    """
    if source not in ("auto", "grouplens", "recbole"):
        raise ValueError(f"unknown source {source!r}; use 'auto', 'grouplens' or 'recbole'")
    target = cache_dir(data_dir) / CACHE_NAME
    if target.exists() and not force:
        try:
            load_tables(data_dir)
            if verbose:
                print(f"MovieLens-100K already cached and verified in {target}")
            return target
        except DataError as exc:
            if verbose:
                print(f"cached copy is not valid ({exc}); fetching again")
    url = url or os.environ.get("CTR_MOVIELENS_URL") or GROUPLENS_URL
    errors = []
    if source in ("auto", "grouplens"):
        try:
            if verbose:
                print(f"downloading {url} ...")
            raw = _download_grouplens(url, GROUPLENS_MD5 if url == GROUPLENS_URL else None)
            return _finish_fetch(tables_from_grouplens_zip(raw), data_dir, f"grouplens: {url}", verbose)
        except ConnectionError as exc:
            errors.append(str(exc))
            if source == "grouplens":
                raise
            if verbose:
                print(f"GroupLens cannot be reached ({exc}); trying the copy in {RECBOLE_REQUIREMENT}")
    with tempfile.TemporaryDirectory() as tmp:
        if verbose:
            print(f"pip download --no-deps {RECBOLE_REQUIREMENT} ...")
        try:
            raw = _download_recbole_wheel(Path(tmp))
        except ConnectionError as exc:
            errors.append(str(exc))
            raise ConnectionError("MovieLens-100K could not be fetched by any route:\n  - "
                                  + "\n  - ".join(errors)
                                  + "\nCheck the network, or set CTR_MOVIELENS_URL to a local copy "
                                    "of ml-100k.zip (file:///path/to/ml-100k.zip).") from exc
    return _finish_fetch(tables_from_recbole_wheel(raw), data_dir,
                         f"pypi: {RECBOLE_REQUIREMENT} ({RECBOLE_PREFIX})", verbose)


def _finish_fetch(tables, data_dir, source, verbose) -> Path:
    target = write_cache(tables, data_dir, source=source)
    if verbose:
        print(f"MovieLens-100K verified and cached in {target} (from {source})")
    return target


@dataclass
class MovieLens:
    """The three canonical MovieLens-100K tables."""

    ratings: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame


def load_tables(data_dir: str | Path | None = None, verify: bool = True) -> MovieLens:
    """Read the cached canonical tables, checking each file's SHA-256 first."""
    target = cache_dir(data_dir) / CACHE_NAME
    if not target.exists():
        raise DataError(f"MovieLens-100K is not in {target}; fetch it first with "
                        f"`python -m ctr_src.data fetch` (or `make data`)")
    out = {}
    for name in TABLES:
        path = target / f"{name}.csv"
        if not path.exists():
            raise DataError(f"{path} is missing; the cache is incomplete -- run "
                            f"`python -m ctr_src.data fetch --force`")
        raw = path.read_bytes()
        if verify and SHA256[name] is not None and _sha256(raw) != SHA256[name]:
            raise DataError(f"{path} is corrupt or altered (SHA-256 mismatch); run "
                            f"`python -m ctr_src.data fetch --force` to fetch it again")
        dtype = {"zip_code": str, "title": str, "genres": str, "gender": str, "occupation": str}
        df = pd.read_csv(io.BytesIO(raw), dtype=dtype, keep_default_na=False, na_values={"release_year": [""]})
        if name == "items":
            df["release_year"] = df["release_year"].astype("Int64")
        if verify:
            _check_table(name, df)
        out[name] = df
    return MovieLens(**out)


def fetch_on_first_use(data_dir: str | Path | None = None) -> Path:
    """Fetch MovieLens-100K into ``data_dir`` unless it is cached there, saying so.

    Offline this raises :class:`DataUnavailableError` with what to do instead."""
    target = cache_dir(data_dir) / CACHE_NAME
    if target.exists():
        return target
    print(f"MovieLens-100K is not in {target} yet: fetching it now, once "
          f"(the same as `python -m ctr_src.data fetch`; about 5 MB).", flush=True)
    try:
        return fetch(data_dir=data_dir, verbose=True)
    except ConnectionError as exc:
        raise DataUnavailableError(
            f"MovieLens-100K is not in {target} and could not be downloaded (is this "
            f"machine offline?):\n{exc}\nTo fix: connect and run again, or run "
            f"`python -m ctr_src.data fetch` where there is a network and copy the "
            f"ml-100k/ folder it writes to {target.parent} (or point CTR_DATA_DIR at it)."
        ) from exc


def load_movielens(data_dir: str | Path | None = None, download: bool | None = None) -> MovieLens:
    """The verified canonical tables, fetched on first use.

    ``download``: by default (``None``) a missing cache in the default place
    (``$CTR_DATA_DIR``, else the checkout's ``data/``, else ``~/.cache/ctr_src``) is
    fetched with a message (:func:`fetch_on_first_use`; offline: a clear
    :class:`DataUnavailableError`), while a folder passed as ``data_dir`` is only read;
    ``True`` fetches into that folder too, ``False`` never fetches. Every table's SHA-256 is
    verified in all cases; a corrupt cache raises :class:`DataError` with the fix.
    """
    if download is None:
        download = data_dir is None
    if download:
        fetch_on_first_use(data_dir)
    return load_tables(data_dir, verify=True)
