"""A table with vaekit, from the command line and from scikit-learn.

The breast-cancer table bundled with scikit-learn (569 rows, 30 raw measurements from 0.001 to 2,500, a 0/1 label)
is written as a CSV; then
- the CLI trains a 2-D VAE on it (types inferred and printed, numeric columns standardised with the training split's
  statistics), evaluates it per column, draws its latent map and decodes codes back into rows in the CSV's units;
- scikit-learn puts VAETransformer in a Pipeline with a LogisticRegression, cross-validated against PCA.

    python examples/tables.py --out runs/tables [--epochs 200]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vaekit.cli import main as vaekit
from vaekit.sklearn import VAETransformer


def write_csv(path: Path) -> None:
    data = load_breast_cancer()
    header = ",".join([*data.feature_names, "target"])
    np.savetxt(path, np.column_stack([data.data, data.target]), delimiter=",", header=header, comments="", fmt="%.6g")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/tables")
    parser.add_argument("--epochs", type=int, default=200, help="CLI training epochs")
    parser.add_argument("--sklearn-epochs", type=int, default=None, help="VAETransformer epochs (default: its own)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "cancer.csv"
    write_csv(table)

    # The command line: train, evaluate per column, map the latent space, decode codes into rows.
    run = str(out / "run")
    for command in (
        ["train", "--data", str(table), "--label-column", "target", "--latent-dim", "2", "--epochs", str(args.epochs),
         "--out", run, "--overwrite", "--no-progress"],
        ["evaluate", run, "--iw-samples", "100", "--no-progress", "--out", str(out / "evaluation.json")],
        ["latent-map", run, "--out", str(out / "latent-map.png")],
        ["encode", run, "--out", str(out / "codes.npy")],
        ["decode", run, str(out / "codes.npy"), "--out", str(out / "decoded.csv")],
    ):
        if vaekit(command) != 0:
            raise SystemExit(f"vaekit {' '.join(command)} failed")

    # scikit-learn: the VAE as a step of a Pipeline, cross-validated against PCA.
    data = load_breast_cancer()
    vae = make_pipeline(VAETransformer(epochs=args.sklearn_epochs, random_state=0), LogisticRegression(max_iter=5000))
    pca = make_pipeline(StandardScaler(), PCA(2), LogisticRegression(max_iter=5000))
    evaluation = json.loads((out / "evaluation.json").read_text())
    summary = {
        "elbo": evaluation["elbo"], "kl": evaluation["kl"], "active_units": evaluation["active_units"],
        "mean_radius_rmse": evaluation["columns"]["mean radius"]["rmse"],
        "cv_accuracy_vae_2d": float(cross_val_score(vae, data.data, data.target, cv=5).mean()),
        "cv_accuracy_pca_2d": float(cross_val_score(pca, data.data, data.target, cv=5).mean()),
        "pictures": {"latent_map": str(out / "latent-map.png")}, "decoded_rows": str(out / "decoded.csv"),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
