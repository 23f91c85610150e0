"""Would averaging the weights help? One run of a recipe on dynamically binarised MNIST with exponential moving
averages of its weights kept beside it (a step hook, so the trainer is unchanged; Polyak averaging with the usual
decays), then the test set's importance-sampled NLL of the last weights and of each average, paired on the same
items and draws.

    python benchmarks/ema.py [--recipe vae-wide] [--decays 0.999,0.9998] [--k 1000] [--final-k 5000]

The recipe trains as shipped (with its time limit, if it has one: the averages' updates are part of the time it
measures). Every model is scored with K = --k on all test items; the best of them (by that NLL) is scored again with
--final-k, the protocol's K = 5000. Writes benchmarks/results/ema-<date>.json and prints the tables.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch

torch.set_flush_denormal(True)  # as `vaekit` does, before any torch work, so that torch's threads inherit it

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import machine, write_results  # noqa: E402

import vaekit  # noqa: E402
from vaekit import config, metrics  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402

RECIPES = Path(vaekit.__file__).resolve().parent / "recipes"


class Averages:
    """After every optimiser step, average <- decay * average + (1 - decay) * weights, for each decay; the
    averages start at the first step's weights. Buffers (none in these MLPs) are copied as they are."""

    def __init__(self, decays: list[float]) -> None:
        self.decays = decays
        self.averages: dict[float, list[torch.Tensor]] = {}

    def on_step_end(self, trainer, step) -> None:
        params = [p.detach() for p in trainer.model.parameters()]
        if not self.averages:
            self.averages = {d: [p.clone() for p in params] for d in self.decays}
            return
        with torch.no_grad():
            for decay, average in self.averages.items():
                torch._foreach_lerp_(average, params, 1 - decay)

    def model(self, trained: torch.nn.Module, decay: float) -> torch.nn.Module:
        averaged = copy.deepcopy(trained)
        with torch.no_grad():
            for p, a in zip(averaged.parameters(), self.averages[decay]):
                p.copy_(a)
        return averaged.eval()


def score(model, x, k: int) -> dict:
    began = time.perf_counter()
    result = metrics.evaluate(model, x, iw_samples=k, seed=0, progress=False)
    return {"k": k, "nll": result.nll, "nll_stderr": result.nll_stderr, "elbo": result.elbo,
            "active_units": result.active_units, "eval_minutes": round((time.perf_counter() - began) / 60, 2),
            "item_nll": result.per_item["nll"].double()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="vae-wide")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--decays", default="0.999,0.9998")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting over the recipe's, e.g. train.epochs=20 (repeatable)")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--final-k", type=int, default=5000)
    parser.add_argument("--reference", metavar="FILE",
                        help="a results file of benchmarks/families.py whose first run trained with these settings: "
                             "where its validation losses equal this run's at every epoch, it is this run's last "
                             "weights, and its --final-k score (with its items' NLLs) stands for theirs")
    parser.add_argument("--out")
    args = parser.parse_args()
    decays = [float(d) for d in args.decays.split(",")]
    if not all(0 < d < 1 for d in decays):
        parser.error("--decays: each between 0 and 1, e.g. 0.999,0.9999")
    cfg = config.override(config.load_yaml(RECIPES / f"{args.recipe}.yaml"),
                          [f"data.name={args.data}", "train.progress=false", *args.set])
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the epochs as `vaekit train` shows them
    dataset = load_dataset(cfg.data)
    averages = Averages(decays)
    began = time.perf_counter()
    result = vaekit.train(cfg, dataset=dataset, callbacks=[averages])
    minutes = (time.perf_counter() - began) / 60
    print(f"trained {len(result.history)} epochs in {minutes:.1f} minutes", flush=True)
    x = dataset.x_test
    models = {"last weights": result.model.eval(), **{f"average {d:g}": averages.model(result.model, d)
                                                       for d in decays}}
    scores = {}
    for name, model in models.items():
        scores[name] = score(model, x, args.k)
        print(f"{name}: K={args.k} NLL {scores[name]['nll']:.3f} ± {scores[name]['nll_stderr']:.3f}", flush=True)
    best = min(scores, key=lambda name: scores[name]["nll"])
    final = {}
    if args.reference:
        earlier = json.loads(Path(args.reference).read_text())["runs"][0]
        same = len(earlier["val_loss"]) == len(result.history) and all(
            math.isclose(a, r.val_loss, rel_tol=1e-9) for a, r in zip(earlier["val_loss"], result.history))
        print(f"{args.reference}: the same validation losses at every epoch: {same}", flush=True)
        if not same:  # its scores cannot stand in for this run's: they are computed here, at --final-k (long)
            print(f"  this run trained otherwise (other settings, such as the recipe's precision and compile, or "
                  f"another CPU): its last weights are scored here at K = {args.final_k}", flush=True)
        if same and earlier["k"] == args.final_k and earlier["test_items"] == x.shape[0]:
            final["last weights"] = {"k": earlier["k"], "nll": earlier["nll"], "nll_stderr": earlier["nll_stderr"],
                                     "elbo": earlier["elbo"], "active_units": earlier["active_units"],
                                     "source": Path(args.reference).name,
                                     "item_nll": torch.tensor(earlier["item_nll"], dtype=torch.float64)}
    for name in dict.fromkeys(["last weights", best]):
        if name in final:
            continue
        final[name] = score(models[name], x, args.final_k)
        print(f"{name}: K={args.final_k} NLL {final[name]['nll']:.3f} ± {final[name]['nll_stderr']:.3f}", flush=True)
    lines = [f"`{args.recipe}` on `{args.data}`: {len(result.history)} epochs, {minutes:.1f} minutes "
             f"({machine()['cpu_label']}); NLL on all {x.shape[0]:,} test items", "",
             "| weights | K | IS-NLL (nats) | ELBO | active units | minus the last weights' (paired) |",
             "|---|---|---|---|---|---|"]
    for table, k in ((scores, args.k), (final, args.final_k)):
        base = table["last weights"]["item_nll"]
        for name, s in table.items():
            mean, stderr = metrics.mean_and_stderr(s["item_nll"] - base)
            paired = "" if name == "last weights" else f"{mean:+.3f} ± {stderr:.3f}"
            lines.append(f"| {name} | {k} | {s['nll']:.2f} ± {s['nll_stderr']:.2f} | {s['elbo']:.2f} | "
                         f"{s['active_units']} | {paired} |")
    results = {"machine": machine(), "command": " ".join(sys.argv), "recipe": args.recipe, "data": args.data,
               "settings": args.set, "decays": decays, "epochs": len(result.history),
               "train_minutes": round(minutes, 2), "val_loss": [r.val_loss for r in result.history],
               "scores": {name: {k: v for k, v in s.items() if k != "item_nll"} for name, s in scores.items()},
               "final": {name: {**{k: v for k, v in s.items() if k != "item_nll"},
                                "item_nll": [round(v, 4) for v in s["item_nll"].tolist()]}
                         for name, s in final.items()}}
    write_results("ema", results, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
