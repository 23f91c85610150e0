"""A model family defined outside vaekit: a VAE whose prior is a learned mixture of Gaussians.

The prior p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)) does not factorise over the latent dimensions and has no
closed-form KL against the Gaussian posterior, so vaekit estimates the KL by Monte Carlo (log q(z|x) - log p(z)
at the posterior draw), samples through this prior, reports no KL per dimension (and says why), and the latent
tools work on the posterior means as for any family. Everything below goes through vaekit's public API.

    python examples/custom_family.py --out runs/mog-vae            # digits, a minute on a laptop
    python examples/custom_family.py --data mnist-10k --epochs 20  # the embedded MNIST subset

After the family is registered, the command line works too, from a script that imports this module:
`vaekit.cli.main(["train", "--model", "mog-vae", "--mog-vae-components", "10", ...])`, in one process (the processes
`--nproc` starts know only vaekit's families and installed plugins': install the module as a `vaekit.plugins` entry
point for that).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

import vaekit


@vaekit.register_family("mog-vae")
class MixturePriorVAE(vaekit.VAE):
    """The VAE's Gaussian posterior and decoder; only the prior changes (Dilokthanakul et al. 2016 learn one
    like it). Its settings are declared once here: YAML `model: {mog-vae: {components: 10}}`, `--set
    model.mog-vae.components=10` or the flag `--mog-vae-components 10`."""

    @dataclass(frozen=True)
    class Settings:
        components: int = vaekit.setting(10, "mixture components of the mog-vae prior",
                                         check=(lambda v: v >= 1, "at least 1"))

    def __init__(self, config: vaekit.ModelConfig) -> None:
        super().__init__(config)
        k, d = self.settings.components, config.latent_dim
        generator = torch.Generator().manual_seed(0)
        self.prior_logits = nn.Parameter(torch.zeros(k))
        self.prior_means = nn.Parameter(2.0 * torch.randn(k, d, generator=generator))  # spread, not stacked
        self.prior_log_scales = nn.Parameter(torch.zeros(k, d))

    def prior(self) -> Distribution:
        components = Independent(Normal(self.prior_means, self.prior_log_scales.exp()), 1)
        return MixtureSameFamily(Categorical(logits=self.prior_logits), components)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--out", default="runs/mog-vae")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # 1. Train it like any family: the trainer, checkpoints and metrics know nothing about it.
    cfg = vaekit.config.override(vaekit.RunConfig(), [
        f"data.name={args.data}", "model.family=mog-vae", f"model.mog-vae.components={args.components}",
        "model.latent_dim=8", "model.network=mlp", "model.hidden_dims=256,128", f"train.epochs={args.epochs}",
        "train.progress=false",
    ])
    result = vaekit.train(cfg, out=out / "run", overwrite=True)
    model = vaekit.load(out / "run")  # a round trip through the run folder: safetensors + config.json
    data = vaekit.load_dataset(cfg.data)

    # 2. Evaluate: the KL has no closed form here, so it is the Monte Carlo estimate of the same samples.
    evaluation = vaekit.metrics.evaluate(model, data.x_test, iw_samples=200)
    print(f"test NLL {evaluation.nll:.2f} nats, ELBO {evaluation.elbo:.2f}, KL {evaluation.kl:.2f} "
          f"({evaluation.kl_estimator}); KL per dimension: {evaluation.kl_per_dim_omitted}")

    # 3. Sample through the learned prior, and explore the latent space with the same tools as any family.
    pictures = {
        "samples": vaekit.viz.save_images(model.sample(64, generator=torch.Generator().manual_seed(0)),
                                          out / "samples.png"),
        "interpolation": vaekit.viz.save_images(
            vaekit.latent.interpolate(model, data.x_test[0], data.x_test[1], steps=10), out / "interpolation.png",
            ncol=10),
        "traversal": vaekit.viz.save_images(
            vaekit.latent.traverse(model, data.x_test[0], top_n=4, data=data.x_test).grid(), out / "traversal.png",
            ncol=9),
    }
    if data.y_test is not None:
        groups = vaekit.latent.groups_from_labels(data.y_test, 0, label_names=data.label_names)
        vector = vaekit.latent.attribute_vector(model, data.x_test, groups.mask, groups.versus)
        edits = vaekit.latent.apply_attribute(model, data.x_test[1], vector, [-1, -0.5, 0, 0.5, 1])
        pictures["attribute"] = vaekit.viz.save_images(edits, out / "attribute.png", ncol=5)
    latent_map = vaekit.latent.latent_map(model, data.x_test, data.y_test)
    pictures["latent_map"] = vaekit.viz.plot_latent_map(latent_map, out / "latent_map.png",
                                                        label_names=data.label_names, manifold=model)
    summary = {"run": str(out / "run"), "epochs": len(result.history), "nll": evaluation.nll,
               "elbo": evaluation.elbo, "kl": evaluation.kl, "kl_estimator": evaluation.kl_estimator,
               "kl_per_dim_omitted": evaluation.kl_per_dim_omitted,
               "pictures": {name: str(path) for name, path in pictures.items()}}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
