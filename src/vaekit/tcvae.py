"""beta-TCVAE (Chen et al. 2018): the VAE whose KL is split into index-code mutual information, total correlation and
dimension-wise KL, with beta weighing the total correlation alone, for disentangled codes."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from .aggregate import decomposition
from .config import non_negative, setting
from .distributions import draw_noise, rsample_with
from .errors import VaekitError
from .models import VAE, Output, register_family


@register_family("tcvae")
class TCVAE(VAE):
    """beta-TCVAE: recon + alpha * MI + beta * TC + gamma * dimension-wise KL (Chen et al. 2018, eq. 4), the three
    estimated on each training batch by minibatch stratified sampling over the training set's size. `--beta` weighs
    the total correlation only (the paper's beta; 6 in its experiments), and the KL warm-up all three: the one family
    whose regularizer's parts carry different weights, hence its own forward. The ELBO reported is the VAE's, with
    the exact KL; the terms mi, tc and dwkl are the batch's estimates (their sum is the KL at the draw), in
    evaluation those of the evaluated batch's own aggregate. One process only: the estimate needs the whole batch."""

    takes_free_bits = False  # its regularizer's parts carry their own weights

    @dataclass(frozen=True)
    class Settings:
        alpha: float = setting(1.0, "weight of the index-code mutual information in the tcvae family's objective",
                               check=(non_negative, ">= 0"))
        gamma: float = setting(1.0, "weight of the dimension-wise KL in the tcvae family's objective",
                               check=(non_negative, ">= 0"))
        dataset_size: int = setting(0, check=(lambda v: v >= 0, ">= 0"), from_data=True)  # training items: filled in
        # from the data (the estimator weighs each batch against the whole set)

    @classmethod
    def settings_from_data(cls, settings: Any, dataset: Any) -> Any:
        return replace(settings, dataset_size=len(dataset.x_train))

    @classmethod
    def batch_refused(cls, settings: Any, batch_size: int) -> str | None:
        if batch_size >= 2:
            return None
        return ("the tcvae family estimates the aggregate posterior from each batch, and a batch of one item has none "
                "(its total correlation would be 0 and --beta ignored): use --batch-size 2 or more")

    @classmethod
    def processes_refused(cls, settings: Any) -> str | None:
        return ("the tcvae family estimates the aggregate posterior from the whole batch, and each of several "
                "processes sees only its share: train it in one process (drop --nproc)")

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_scale: float = 1.0) -> Output:
        qz = self.encode(x, y)
        z = qz.rsample()
        recon = self.likelihood.nll(self.decoder_params(z, y), x)  # (B,)
        kl = self.kl(qz, z)  # exact: the ELBO's
        if self.training and torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_world_size() > 1:
            raise VaekitError(self.processes_refused(self.settings))  # a process group set up by the user
        # Training: each batch weighed against the training set (its size, filled in from the data; unknown, as for a
        # model built by hand, the batch stands for the data). Evaluation: the evaluated batch's own aggregate.
        size = self.settings.dataset_size if self.training and self.settings.dataset_size >= x.shape[0] else x.shape[0]
        if x.shape[0] >= 2:
            parts = decomposition(z, qz.base_dist.loc, qz.base_dist.scale, size)
            mi, tc, dwkl = parts.mutual_info, parts.total_correlation, parts.dimension_kl
        else:  # one item (a last batch of one) has no aggregate to speak of: its whole KL counts as information
            mi, tc, dwkl = kl, torch.zeros_like(kl), torch.zeros_like(kl)
        settings = self.settings
        regularizer = settings.alpha * mi + self.config.beta * tc + settings.gamma * dwkl
        loss = (recon + kl_scale * regularizer).mean()
        return Output(loss=loss, terms={"recon": recon, "kl": kl, "mi": mi, "tc": tc, "dwkl": dwkl},
                      elbo=-(recon + kl))

    def evaluation_terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per item: the KL's split into index-code mutual information, total correlation and dimension-wise KL, at a
        posterior draw (from evaluate's seed), the evaluated batch (evaluate's batches of about 1,000 items) standing
        for the aggregate posterior, as in the objective's evaluation (evaluate's `mi`, `tc` and `dwkl`)."""
        if x.shape[0] < 2:
            return {}  # one item has no aggregate to speak of
        qz = self.encode(x, y)
        z = rsample_with(qz, draw_noise(qz))
        parts = decomposition(z, qz.base_dist.loc, qz.base_dist.scale, x.shape[0])
        return {"mi": parts.mutual_info, "tc": parts.total_correlation, "dwkl": parts.dimension_kl}
