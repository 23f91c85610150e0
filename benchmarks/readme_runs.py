"""The README's worked examples, run as the README shows them, with their figures stored: the smile and glasses
vectors on the face sets, `vaekit compare` on Fashion-MNIST and digits, the edits of a default `shapes` model, and
label-conditioned samples (of the VAE, of the VampPrior given the class, and of the VQ-VAE given the class) read by
an independent classifier.

    python benchmarks/readme_runs.py [--stages faces,compare,shapes,conditional,conditional_vamp,conditional_vqvae]
                                     [--work DIR]
                                     [--vqvae-data mnist-10k|mnist] [--out FILE]

Each stage calls the commands the README prints (`vaekit train`, `vaekit attribute --score`, `vaekit compare`), in
a child process as a user would, times them, and keeps what they write. The results file is rewritten after every
stage, so a cut run keeps the stages that finished. The face stages need the face sets (VAEKIT_DATA, or `vaekit data
get`); compare needs Fashion-MNIST. About 50 minutes on 2 cores in all, 20 of them the smiles model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import machine, write_results  # noqa: E402

STAGES = ("faces", "compare", "shapes", "conditional", "conditional_vamp", "conditional_vqvae")
SMILE_STRENGTHS = "-4,-3,-2,-1,0,1,2,3,4"
GLASSES_STRENGTHS = "-3,-2,-1,0,1,2,3"
METHODS = ("mean-diff", "linear", "local")
OPTIONS = {"vqvae_data": "mnist-10k"}  # what main's flags set for the stages


def vaekit(*args: str) -> float:
    """Run one vaekit command as a user would; its wall-clock seconds."""
    command = [sys.executable, "-c", "import sys; from vaekit.cli import main; sys.exit(main())", *args]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - start, 1)


def epochs(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds = [row["seconds"] for row in rows if row.get("seconds") is not None]
    return {"epochs": len(rows), "train_seconds": round(sum(seconds), 1),
            "epoch_seconds_min_max": [round(min(seconds), 1), round(max(seconds), 1)] if seconds else None,
            "last_val_loss": rows[-1].get("val_loss") if rows else None}


def scored(run: Path, attribute: str, strengths: str, method: str, work: Path) -> dict:
    out = work / f"{run.name}-{attribute}-{method}.json"
    seconds = vaekit("attribute", str(run), "--attr", attribute, "--score", f"--strengths={strengths}",
                     "--method", method, "--out", str(out))
    return {**json.loads(out.read_text()), "seconds": seconds}


def faces(work: Path) -> dict:
    smiles = work / "smiles"
    record: dict = {"smiles": {"command": "vaekit train --recipe faces --data smiles",
                               "wall_seconds": vaekit("train", "--recipe", "faces", "--data", "smiles", "--out",
                                                      str(smiles), "--no-progress", "--overwrite")}}
    record["smiles"].update(epochs(smiles))
    for method in METHODS:
        record["smiles"][method] = scored(smiles, "smile", SMILE_STRENGTHS, method, work)
    olivetti = work / "olivetti"
    args = ["--recipe", "faces", "--data", "olivetti", "--epochs", "150"]
    seconds = vaekit("train", *args, "--out", str(olivetti), "--no-progress", "--overwrite")
    record["olivetti"] = {"command": "vaekit train " + " ".join(args), "wall_seconds": seconds}
    record["olivetti"].update(epochs(olivetti))
    for method in METHODS:
        record["olivetti"][method] = scored(olivetti, "glasses", GLASSES_STRENGTHS, method, work)
    return record


def compare(work: Path) -> dict:
    record = {}
    for name, args in (("fashion-mnist", ["--data", "fashion-mnist", "--network", "mlp", "--latent-dim", "16",
                                          "--epochs", "10"]),
                       ("digits", ["--data", "digits", "--latent-dim", "8", "--epochs", "50"])):
        out = work / f"compare-{name}"
        seconds = vaekit("compare", *args, "--out", str(out), "--overwrite")
        record[name] = {"command": "vaekit compare " + " ".join(args), "wall_seconds": seconds,
                        **json.loads((out / "compare.json").read_text())}
    return record


def shapes(work: Path) -> dict:
    run = work / "shapes-default"
    args = ["--data", "shapes", "--image-size", "32", "--latent-dim", "6", "--epochs", "5"]
    record: dict = {"command": "vaekit train " + " ".join(args),
                    "wall_seconds": vaekit("train", *args, "--out", str(run), "--no-progress", "--overwrite")}
    record.update(epochs(run))
    for attribute in ("scale", "x", "y"):
        for method in ("mean-diff", "linear"):
            score = scored(run, attribute, "-1,0,1", method, work)
            record[f"{attribute}/{method}"] = {key: score[key] for key in ("monotone", "ends", "items", "seconds")}
    return record


def judge():
    """The classifier that reads the conditional stages' samples: an MLP trained on mnist-10k's pixels (seeded)."""
    import vaekit
    from vaekit.config import DataConfig
    from vaekit.data import load_dataset
    from vaekit.report.classifier import train_feature_classifier

    data = load_dataset(DataConfig(name="mnist-10k"))
    pixels = vaekit.Dataset("pixels", data.x_train.flatten(1), data.x_test.flatten(1), data.y_train, data.y_test)
    return train_feature_classifier(pixels, steps=1500, seed=1)


def trained_and_read(cfg, data, classifier) -> tuple:
    """A label-conditioned model trained on data (and its training seconds), and the share of its 1,000 prior samples
    (100 per digit, seeded) that the classifier reads as the digit asked for."""
    import torch

    import vaekit

    start = time.perf_counter()
    model = vaekit.train(cfg, dataset=data).model
    seconds = time.perf_counter() - start
    labels = torch.arange(1000) % 10
    samples = model.sample(1000, labels, torch.Generator().manual_seed(0))
    with torch.no_grad():
        predicted = classifier(samples.flatten(1)).argmax(1)
    return model, seconds, round(float((predicted == labels).float().mean()), 4)


def conditional(work: Path) -> dict:
    """The `conditional` recipe's code sizes on mnist-10k, 10 epochs each, and the default conv network at 2-D: 1,000
    prior samples (100 per digit) read by an MLP trained on the pixels, as tests/test_models.py judges the recipe."""
    from dataclasses import replace

    import vaekit
    from vaekit.cli.common import recipe_config
    from vaekit.config import DataConfig
    from vaekit.data import load_dataset
    from vaekit.networks import resolve_network

    data = load_dataset(DataConfig(name="mnist-10k"))
    classifier = judge()
    record: dict = {"judge_test_accuracy": round(classifier.test_accuracy, 4), "models": []}
    base = recipe_config("conditional")  # MLP networks 512-256, a 2-D code, 10 epochs
    variants = [replace(base.model, latent_dim=dim) for dim in (2, 4, 8, 16)]
    variants.append(replace(vaekit.RunConfig().model, condition="label", latent_dim=2))  # the default network: conv
    for model_cfg in variants:
        dim = model_cfg.latent_dim
        cfg = replace(base, data=DataConfig(name="mnist-10k"), model=model_cfg,
                      train=replace(base.train, progress=False))
        model, seconds, share = trained_and_read(cfg, data, classifier)
        record["models"].append({"network": resolve_network(model.config), "latent_dim": dim,
                                 "train_seconds": round(seconds, 1), "requested_digit_share": share})
    return record


def conditional_vamp(work: Path) -> dict:
    """The `conditional` recipe (mnist-10k, MLP networks 512-256, its 10 epochs) at a 2-D and a 16-D code, as the vae
    (its N(0, I) prior takes no label: the label reaches the networks alone) and as the vamp (the prior of a class is
    the mixture of its 50 of the 500 pseudo-inputs): 1,000 prior samples (100 per digit) read by the `conditional`
    stage's classifier, and the test split's -log p(x|y) (1,000 importance samples) and ELBO; one run each, seed 0."""
    from dataclasses import replace

    import torch

    import vaekit
    from vaekit.cli.common import recipe_config
    from vaekit.config import DataConfig
    from vaekit.data import load_dataset

    data = load_dataset(DataConfig(name="mnist-10k"))
    classifier = judge()
    record: dict = {"judge_test_accuracy": round(classifier.test_accuracy, 4), "iw_samples": 1000,
                    "threads": torch.get_num_threads(), "models": []}
    base = recipe_config("conditional")
    for dim in (2, 16):
        for family in ("vae", "vamp"):
            cfg = replace(base, data=DataConfig(name="mnist-10k"), model=replace(base.model, family=family,
                                                                              latent_dim=dim),
                          train=replace(base.train, progress=False))
            model, seconds, share = trained_and_read(cfg, data, classifier)
            start = time.perf_counter()
            result = vaekit.metrics.evaluate(model, data.x_test, iw_samples=1000, y=data.y_test, seed=0)
            record["models"].append({
                "family": family, "latent_dim": dim, "epochs": cfg.train.epochs, "train_seconds": round(seconds, 1),
                "requested_digit_share": share,
                "test_nll_given_label": round(result.nll, 2), "test_nll_standard_error": round(result.nll_stderr, 2),
                "test_elbo": round(result.elbo, 2), "evaluate_seconds": round(time.perf_counter() - start, 1)})
    return record


def conditional_vqvae(work: Path) -> dict:
    """The `vqvae` recipe label-conditioned on --vqvae-data (mnist-10k by default, or the recipe's mnist; its 10
    epochs, then the prior's 10), 1,000 samples (100 per digit) read by a classifier trained as the `conditional`
    stage's (on mnist-10k's pixels): drawn with the label given to both the prior
    and the decoder (as `vaekit sample --label K`), and with the prior's draw for digit k decoded as digit k + 5 (mod
    10), to show which of the two carries the class."""
    from dataclasses import replace

    import torch

    import vaekit as vk
    from vaekit.cli.common import recipe_config
    from vaekit.config import DataConfig
    from vaekit.data import load_dataset

    classifier = judge()
    data = load_dataset(DataConfig(name=OPTIONS["vqvae_data"]))
    base = recipe_config("vqvae")
    cfg = replace(base, data=replace(base.data, name=OPTIONS["vqvae_data"]),
                  model=replace(base.model, condition="label"),
                  train=replace(base.train, progress=False))
    run = work / "vqvae-conditional"
    start = time.perf_counter()
    vk.train(cfg, dataset=data, out=run, overwrite=True)
    model_seconds = time.perf_counter() - start
    start = time.perf_counter()
    vk.train_stage(run, "prior", epochs=cfg.train.epochs, dataset=data)
    prior_seconds = time.perf_counter() - start
    model = vk.load(run)
    labels = torch.arange(1000) % 10
    start = time.perf_counter()
    codes = model.sample_prior(1000, torch.Generator().manual_seed(0), labels)
    sample_seconds = time.perf_counter() - start
    # the README's picture: `vaekit sample RUN --n 100`, column k drawn for digit k
    picture_seconds = vaekit("sample", str(run), "--n", "100", "--out", str(work / "vqvae_conditional_samples.png"))
    other = (labels + 5) % 10
    with torch.no_grad():
        as_asked = classifier(model.decode_code(codes, labels).mean.flatten(1)).argmax(1)
        swapped = classifier(model.decode_code(codes, other).mean.flatten(1)).argmax(1)
    share = lambda predicted, wanted: round(float((predicted == wanted).float().mean()), 4)  # noqa: E731
    shares = {"requested_digit_share": share(as_asked, labels),
              "decoded_as_k_plus_5_read_as_prior_digit": share(swapped, labels),
              "decoded_as_k_plus_5_read_as_decoder_digit": share(swapped, other)}
    return {"judge_test_accuracy": round(classifier.test_accuracy, 4), "recipe": "vqvae --condition label",
            "data": OPTIONS["vqvae_data"], "threads": torch.get_num_threads(),
            "epochs": cfg.train.epochs, "prior_epochs": cfg.train.epochs, "model_seconds": round(model_seconds, 1),
            "prior_seconds": round(prior_seconds, 1), "sample_seconds_1000": round(sample_seconds, 1),
            "picture": str(work / "vqvae_conditional_samples.png"), "picture_seconds": picture_seconds,
            "last_val_loss": epochs(run)["last_val_loss"], "last_val_prior_nll": _last_row(run / "prior-metrics.jsonl"),
            **shares}


def _last_row(path: Path) -> float | None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[-1].get("val_loss") if rows else None


def markdown(results: dict) -> str:
    lines = [f"README runs ({results['machine']['cpu_label']})"]
    for stage, record in results["stages"].items():
        lines.append(f"\n## {stage}\n```\n{json.dumps(record, indent=1)[:4000]}\n```")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--vqvae-data", default=OPTIONS["vqvae_data"], choices=("mnist-10k", "mnist"),
                        help="the data of the conditional_vqvae stage's model (default %(default)s)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    OPTIONS["vqvae_data"] = args.vqvae_data
    chosen = [stage for stage in args.stages.split(",") if stage]
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}: use {', '.join(STAGES)}")
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.work or temporary)
        work.mkdir(parents=True, exist_ok=True)
        results = {"machine": machine(), "vaekit_data": os.environ.get("VAEKIT_DATA"), "stages": {}}
        for stage in chosen:
            start = time.perf_counter()
            results["stages"][stage] = globals()[stage](work)
            results["stages"][stage]["stage_seconds"] = round(time.perf_counter() - start, 1)
            results["machine_after"] = machine()
            path = write_results("readme-runs", results, args.out, f"stage {stage} done")
            args.out = str(path)
    print(markdown(results))


if __name__ == "__main__":
    main()
