#!/usr/bin/env python3
"""A gradient-boosting baseline for the multi-task recipe: one scikit-learn
HistGradientBoosting model per task, trained on DIR/train.csv, scored on DIR/val.csv and
DIR/test.csv (AUC for a binary target, RMSE for a regression one), over several seeds; prints
a JSON summary with the mean, standard deviation, min and max of every figure.

Columns come from --features/--categorical/--targets, or else from DIR/columns.json (written
by scripts/prepare_multitask_data.py). Categorical columns are ordinal-encoded with the
categories seen in train (an unseen one is missing) and given to the model as categorical;
one with more categories than the model's 255 bins (user_id, movie_id) is passed as a
number instead: its categories' rank by frequency in train, so that a split on it separates
frequent from rare ones. The seed is the model's random_state, which draws its internal
early-stopping split.

Usage: scripts/multitask_baseline.py --data DIR [--features a,b,...] [--categorical a,...]
                                     [--targets t1[:binary|:regression],...] [--seeds N]
                                     [--max-iter N]
Example: .venv/bin/python scripts/multitask_baseline.py --data data/multitask/adult --seeds 3
"""
import argparse
import csv
import json
import math
import pathlib
import statistics
import sys
import time

import numpy as np

MAX_CATEGORIES = 255  # HistGradientBoosting's limit for a categorical feature (max_bins)


def fail(msg):
    print(f"multitask_baseline: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_csv(path):
    """{column: list of strings} of a CSV file with a header."""
    try:
        with open(path, newline="") as f:
            r = csv.reader(f)
            header = next(r)
            cols = [[] for _ in header]
            for line, row in enumerate(r, start=2):
                if len(row) != len(header):
                    fail(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
                for c, v in zip(cols, row):
                    c.append(v)
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    except StopIteration:
        fail(f"{path} is empty")
    return dict(zip(header, cols))


def numeric(values, path, col):
    """[n] float64; empty text is missing (NaN)."""
    try:
        return np.array([float(v) if v != "" else math.nan for v in values])
    except ValueError:
        bad = next(v for v in values if v != "" and not _is_float(v))
        fail(f"{path}: column '{col}' is numeric but holds '{bad}' (name it in --categorical?)")


def _is_float(v):
    try:
        float(v)
        return True
    except ValueError:
        return False


def encode(splits, features, categorical):
    """X [n, features] per split and whether each feature is given as categorical."""
    train = splits["train"]
    columns = {s: [] for s in splits}
    is_cat, notes = [], {}
    for col in features:
        if col not in categorical:
            for s, data in splits.items():
                columns[s].append(numeric(data[col], f"{s}.csv", col))
            is_cat.append(False)
            continue
        counts = {}
        for v in train[col]:
            counts[v] = counts.get(v, 0) + 1
        # Most frequent first (ties by name, so the codes do not depend on row order).
        order = sorted(counts, key=lambda v: (-counts[v], v))
        code = {v: float(i) for i, v in enumerate(order)}
        for s, data in splits.items():
            columns[s].append(np.array([code.get(v, math.nan) for v in data[col]]))
        as_cat = len(order) <= MAX_CATEGORIES
        is_cat.append(as_cat)
        notes[col] = (f"categorical, {len(order)} categories" if as_cat else
                      f"{len(order)} categories > {MAX_CATEGORIES}: frequency rank as a number")
    X = {s: np.stack(c, axis=1) if c else np.zeros((len(splits[s][features[0]]), 0))
         for s, c in columns.items()}
    return X, np.array(is_cat, dtype=bool), notes


def task_kind(values, given):
    if given:
        return given
    return "binary" if set(values) <= {0.0, 1.0} else "regression"


def summary(xs):
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="directory with train.csv, val.csv, test.csv")
    ap.add_argument("--features", help="comma-separated feature columns")
    ap.add_argument("--categorical", help="comma-separated categorical columns (among features)")
    ap.add_argument("--targets", help="comma-separated targets, each optionally :binary or "
                    ":regression (default: binary when every value is 0 or 1)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    ap.add_argument("--max-iter", type=int, default=500,
                    help="boosting rounds at most, with early stopping (default 500)")
    args = ap.parse_args()
    if args.seeds < 1:
        fail(f"--seeds must be >= 1, got {args.seeds}")
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.metrics import mean_squared_error, roc_auc_score
    except ImportError as e:
        fail(f"cannot import scikit-learn ({e}); scripts/setup.sh installs Debian's "
             f"python3-sklearn")

    data = pathlib.Path(args.data)
    meta = {}
    if not (args.features and args.targets):
        try:
            meta = json.loads((data / "columns.json").read_text())
        except OSError:
            fail(f"give --features and --targets, or a --data directory with columns.json "
                 f"(no {data / 'columns.json'})")
    split_list = lambda s: [c.strip() for c in s.split(",") if c.strip()] if s else []
    features = split_list(args.features) or meta.get("numeric", []) + meta.get("categorical", [])
    categorical = set(split_list(args.categorical) if args.categorical is not None
                      else meta.get("categorical", []))
    targets = {}
    for t in split_list(args.targets) or [f"{k}:{v}" for k, v in meta["targets"].items()]:
        name, _, kind = t.partition(":")
        if kind not in ("", "binary", "regression"):
            fail(f"--targets {t}: the kind must be binary or regression")
        targets[name] = kind
    if not features:
        fail("no feature columns")
    if categorical - set(features):
        fail(f"--categorical names columns that are not features: "
             f"{sorted(categorical - set(features))}")

    splits = {s: read_csv(data / f"{s}.csv") for s in ("train", "val", "test")}
    for s, cols in splits.items():
        missing = [c for c in features + list(targets) if c not in cols]
        if missing:
            fail(f"{data / (s + '.csv')}: no column(s) {missing}; it has {list(cols)}")
    X, is_cat, notes = encode(splits, features, categorical)

    report = {"data": str(data), "rows": {s: int(X[s].shape[0]) for s in X},
              "features": features, "encoding": notes, "seeds": args.seeds,
              "max_iter": args.max_iter, "tasks": {}}
    for target, given in targets.items():
        y = {s: numeric(splits[s][target], f"{s}.csv", target) for s in splits}
        kind = task_kind(set(y["train"].tolist()), given)
        scores = {"val": [], "test": []}
        iters = []
        start = time.time()
        for seed in range(args.seeds):
            common = dict(max_iter=args.max_iter, early_stopping=True, validation_fraction=0.1,
                          n_iter_no_change=20, random_state=seed,
                          categorical_features=is_cat if is_cat.any() else None)
            if kind == "binary":
                model = HistGradientBoostingClassifier(**common).fit(X["train"], y["train"])
                for s in scores:
                    scores[s].append(roc_auc_score(y[s], model.predict_proba(X[s])[:, 1]))
            else:
                model = HistGradientBoostingRegressor(**common).fit(X["train"], y["train"])
                for s in scores:
                    scores[s].append(math.sqrt(mean_squared_error(y[s], model.predict(X[s]))))
            iters.append(int(model.n_iter_))
        report["tasks"][target] = {
            "kind": kind, "metric": "auc" if kind == "binary" else "rmse",
            "val": summary(scores["val"]), "test": summary(scores["test"]),
            "per_seed": {"val": scores["val"], "test": scores["test"], "iterations": iters},
            "seconds": round(time.time() - start, 1)}
        print(f"multitask_baseline: {target} ({kind}): test "
              f"{report['tasks'][target]['metric']} {report['tasks'][target]['test']['mean']:.4f}",
              file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
