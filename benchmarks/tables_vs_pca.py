"""Non-linear dimensionality reduction on scikit-learn's bundled tables: vaekit's VAETransformer and AETransformer at
2-D against PCA at 2-D, in one run on one machine.

Protocol (the README's "Tables" table): stratified 5-fold cross-validation (shuffled, seed 0). In each fold every
reducer is fitted on the training rows with its default settings (PCA on the standardised training rows); then
- accuracy: a LogisticRegression (max_iter 5000) fitted on the training rows' 2-D codes, scored on the test rows';
- reconstruction error: mean squared error per value on the test rows, in standardised units (the training fold's
  mean and std; a zero-variance column keeps scale 1), of decode(encode(x)): PCA's inverse_transform, and the
  transformers' inverse_transform (their decoders' means, in the user's units, standardised the same way);
- fit seconds: the transformer's fit, wall clock.
Means (and standard deviations) over the folds; the targets: accuracy within 3 points of PCA's, reconstruction error
below PCA's on at least two tables, every fit under 30 s.

Writes benchmarks/results/tables-<date>.json; prints a Markdown table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from vaekit.sklearn import AETransformer, VAETransformer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import cpu_label  # noqa: E402
TABLES = {"iris": load_iris, "wine": load_wine, "digits": load_digits}


def reducers(seed: int, params: dict | None = None) -> dict:
    """PCA and the transformers with their defaults (or `params` for both, to explore other settings)."""
    params = params or {}
    return {
        "PCA": lambda: PCA(2, random_state=seed),
        "VAE": lambda: VAETransformer(random_state=seed, **params),
        "AE": lambda: AETransformer(random_state=seed, **params),
    }


def one_fold(name: str, make, x_train, y_train, x_test, y_test) -> dict:
    scaler = StandardScaler().fit(x_train)
    started = time.perf_counter()
    if name == "PCA":
        reducer = make().fit(scaler.transform(x_train))
        seconds = time.perf_counter() - started
        train_codes, test_codes = reducer.transform(scaler.transform(x_train)), reducer.transform(scaler.transform(x_test))
        decoded = reducer.inverse_transform(test_codes)
    else:
        reducer = make().fit(x_train)
        seconds = time.perf_counter() - started
        train_codes, test_codes = reducer.transform(x_train), reducer.transform(x_test)
        decoded = scaler.transform(reducer.inverse_transform(test_codes))
    classifier = LogisticRegression(max_iter=5000).fit(train_codes, y_train)
    return {"accuracy": float(classifier.score(test_codes, y_test)),
            "mse": float(np.mean((scaler.transform(x_test) - decoded) ** 2)), "fit_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated: iris, wine, digits")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/tables-<date>.json)")
    parser.add_argument("--params", default="{}", help="JSON of transformer parameters instead of the defaults, e.g. "
                        "'{\"epochs\": 100}' (the README's table uses the defaults)")
    args = parser.parse_args()
    results: dict = {}
    for table in args.tables.split(","):
        x, y = TABLES[table](return_X_y=True)
        folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(x, y)
        rows: dict[str, list[dict]] = {name: [] for name in reducers(args.seed)}
        for fold, (train, test) in enumerate(folds):
            for name, make in reducers(args.seed + fold, json.loads(args.params)).items():
                rows[name].append(one_fold(name, make, x[train], y[train], x[test], y[test]))
                last = rows[name][-1]
                print(f"{table} fold {fold} {name}: accuracy {last['accuracy']:.3f}  mse {last['mse']:.3f}  "
                      f"fit {last['fit_seconds']:.1f}s", flush=True)
        results[table] = {
            name: {key: {"mean": statistics.fmean(r[key] for r in fold_rows),
                         "std": statistics.pstdev(r[key] for r in fold_rows),
                         "max": max(r[key] for r in fold_rows)} for key in ("accuracy", "mse", "fit_seconds")}
            for name, fold_rows in rows.items()}
        results[table]["shape"] = list(x.shape)
    record = {"date": datetime.date.today().isoformat(), "cpu": cpu_label(), "cores": os.cpu_count(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "folds": args.folds, "seed": args.seed,
              "params": {"VAE": VAETransformer(**json.loads(args.params)).get_params(),
                         "AE": AETransformer(**json.loads(args.params)).get_params()},
              "results": results}
    out = Path(args.out) if args.out else HERE / "results" / f"tables-{record['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"\n{record['cpu']}, {record['cores']} cores, torch {record['torch']}; {args.folds}-fold CV; {out}\n")
    print("| table | rows x columns | LR accuracy on 2-D codes: PCA / VAE / AE | reconstruction MSE: PCA / VAE / AE "
          "| VAE fit (s, slowest fold) |")
    print("|---|---|---|---|---|")
    for table, result in results.items():
        acc = " / ".join(f"{result[n]['accuracy']['mean']:.3f}" for n in ("PCA", "VAE", "AE"))
        mse = " / ".join(f"{result[n]['mse']['mean']:.3f}" for n in ("PCA", "VAE", "AE"))
        shape = "x".join(map(str, result["shape"]))
        print(f"| {table} | {shape} | {acc} | {mse} | {result['VAE']['fit_seconds']['max']:.1f} |")


if __name__ == "__main__":
    main()
