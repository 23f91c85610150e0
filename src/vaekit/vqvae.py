"""The VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning"): the encoder's output at each
position of a code grid is replaced by its nearest vector in a learned codebook; gradients pass straight through
the quantiser to the encoder; the codebook learns from the codebook loss ||sg[z_e] - e||^2 or, as an option, from
exponential moving averages of the encoder outputs each code receives (the paper's appendix A.1); a commitment
loss ||z_e - sg[e]||^2 keeps the encoder near its codes.

Images get a spatial code: the convolutions' output grid (H/2^n x W/2^n positions of model.latent_dim numbers each);
other data a row of model.vqvae.positions positions. Sampling needs a prior over the code grid: an autoregressive
model (by default a gated PixelCNN, van den Oord et al. 2016, whose two stacks leave no blind spot; or the first
PixelCNN's masked convolutions, model.vqvae.prior=pixelcnn) trained as a second stage on the codes of the
training data, from the same run folder (`vaekit train-prior RUN`). An item's code for the latent tools is its
quantised grid, flattened; the decoder takes any vector of that size, so interpolation and attribute vectors work
on it as on any continuous code.
"""
from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, constraints

from .config import ModelConfig, non_negative, positive, setting
from . import distributions
from .distributions import PointMass
from .errors import VaekitError
from .models import Model, Output, _full_precision, register_family
from .networks import (ACTIVATIONS, MLPDecoder, MLPEncoder, _conv_sizes, downsampling_convs, resolve_network,
                       upsampling_convs)

STAGE_PRIOR = "prior"
PRIOR_NETWORKS = ("gated", "pixelcnn")  # model.vqvae.prior: GatedCodePrior, CodePrior
SAMPLE_CHUNK = 256  # code grids drawn together by the prior (its logits per position: chunk x codebook)

log = logging.getLogger(__name__)


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only positions before the centre in raster order (rows above, and the centre row to
    the left), and with `include_centre` the centre too: mask A for the first layer, B after it."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, include_centre: bool) -> None:
        super().__init__(channels_in, channels_out, kernel, padding=kernel // 2)
        mask = torch.zeros(kernel, kernel)
        mask[: kernel // 2] = 1
        mask[kernel // 2, : kernel // 2 + (1 if include_centre else 0)] = 1
        self.register_buffer("mask", mask[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class CodePrior(nn.Module):
    """p(codes) = prod_i p(c_i | c_<i) over a grid of code indices in raster order: an embedding, a mask-A
    convolution, residual mask-B convolutions, and a 1x1 convolution to the codebook's logits (model.vqvae.prior
    pixelcnn). Stacked masks leave a blind spot: a position does not see some earlier ones above and to its right
    (on a 7x7 grid, (1, 0) never sees (0, 3) to (0, 6)); GatedCodePrior has none. With `labels` classes, p(codes |
    y): each layer adds a learned bias per class to every position (the same at each, so causality is kept)."""

    def __init__(self, codebook: int, channels: int, layers: int, labels: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(codebook, channels)
        self.first = MaskedConv2d(channels, channels, 5, include_centre=False)
        self.blocks = nn.ModuleList(MaskedConv2d(channels, channels, 3, include_centre=True) for _ in range(layers))
        self.out = nn.Conv2d(channels, codebook, 1)
        self.labels = labels
        self.conditions = _label_biases(labels, channels, layers + 1)
        self.register_buffer("trained", torch.zeros((), dtype=torch.long))  # steps of training it has had

    def forward(self, codes: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """codes (B, H, W) (and, where the prior takes labels, their classes y (B,)) -> logits (B, K, H, W) of each
        position given those before it."""
        biases = _label_terms(self, y, codes.shape[0])
        h = self.first(self.embed(codes).permute(0, 3, 1, 2)) + next(biases)
        for block in self.blocks:
            h = h + block(F.relu(h)) + next(biases)
        return self.out(F.relu(h))

    def nll(self, codes: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(codes) (or -log p(codes | y)) per item (B,), nats."""
        return F.cross_entropy(self(codes, y), codes, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, grid: tuple[int, int], device: torch.device,
               y: torch.Tensor | None = None) -> torch.Tensor:
        """n code grids (n, H, W) (given the classes y (n,), where the prior takes labels), one position at a time
        (H * W passes over each chunk of SAMPLE_CHUNK grids: the whole batch at once held n x codebook logits per
        position, 1.7 GB for 6,000 draws), drawing from torch's global generator; a progress bar where it takes
        long."""
        from tqdm.auto import tqdm

        from .progress import bar_timing

        codes = torch.zeros(n, *grid, dtype=torch.long, device=device)
        with tqdm(total=n * grid[0] * grid[1], desc="drawing codes from the prior", unit="code", unit_scale=True,
                  leave=False, dynamic_ncols=True, **bar_timing(delay=2.0)) as bar:
            for start in range(0, n, SAMPLE_CHUNK):
                chunk = codes[start:start + SAMPLE_CHUNK]
                labels = None if y is None else y[start:start + SAMPLE_CHUNK]
                for i in range(grid[0]):
                    for j in range(grid[1]):
                        # the rows below i do not reach row i's logits (causal, and padded above, not below): left
                        # out, a 7x7 grid is drawn in 4/7 of the work
                        logits = self(chunk[:, : i + 1], labels)[:, :, i, j]
                        chunk[:, i, j] = torch.multinomial(torch.softmax(logits.double(), -1), 1).squeeze(1)
                        bar.update(len(chunk))
        return codes


class GatedCodePrior(nn.Module):
    """p(codes) = prod_i p(c_i | c_<i) over a grid of code indices in raster order, by the gated PixelCNN (van den
    Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"): a vertical stack that sees every row
    above a position and a horizontal stack that sees the row to its left and the vertical stack, so that within its
    reach no earlier position is out of sight (the masked convolutions of CodePrior leave a blind spot to the upper
    right). The reach grows with the layers: each adds a row above and a column to each side (the first reaches 2),
    so the default 6 see the whole of a 7x7 or 8x8 grid, not of a 14x14 one. Each layer gates its convolution's two
    halves, tanh(a) * sigmoid(b); the horizontal stack is residual. With `labels` classes, p(codes | y) as that
    paper conditions it: each layer adds a learned bias per class to both stacks' gates, the same at every
    position."""

    def __init__(self, codebook: int, channels: int, layers: int, kernel: int = 3, labels: int = 0) -> None:
        super().__init__()
        if kernel < 3 or kernel % 2 == 0:
            raise ValueError(f"the gated prior's kernel must be odd and at least 3, got {kernel}")
        self.embed = nn.Embedding(codebook, channels)
        self.reach = kernel // 2  # columns to each side of a vertical convolution; columns to the left of a horizontal
        first, reach = 4 * self.reach + 1, self.reach  # the first layer reaches as far as CodePrior's 5x5 mask A
        self.first_vertical = nn.Conv2d(channels, 2 * channels, (first // 2, first))
        self.first_horizontal = nn.Conv2d(channels, 2 * channels, (1, first // 2))
        self.first_link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.vertical = nn.ModuleList(nn.Conv2d(channels, 2 * channels, (reach + 1, kernel)) for _ in range(layers))
        self.horizontal = nn.ModuleList(nn.Conv2d(channels, 2 * channels, (1, reach + 1)) for _ in range(layers))
        self.links = nn.ModuleList(nn.Conv2d(2 * channels, 2 * channels, 1) for _ in range(layers))
        self.residuals = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(layers))
        self.out = nn.Conv2d(channels, codebook, 1)
        self.labels = labels
        self.conditions = _label_biases(labels, 2 * channels, layers + 1)
        self.register_buffer("trained", torch.zeros((), dtype=torch.long))  # steps of training it has had

    @staticmethod
    def _gate(h: torch.Tensor) -> torch.Tensor:
        a, b = h.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, codes: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """codes (B, H, W) (and, where the prior takes labels, their classes y (B,)) -> logits (B, K, H, W) of each
        position given those before it."""
        biases = _label_terms(self, y, codes.shape[0])
        x = self.embed(codes).permute(0, 3, 1, 2)
        height, width = x.shape[-2:]
        size = self.first_vertical.kernel_size
        # the vertical stack at row i sees rows i - size[0] .. i - 1 (padded above by size[0], cut below)
        v = self.first_vertical(F.pad(x, (size[1] // 2, size[1] // 2, size[0], 0)))[:, :, :height]
        # the horizontal stack at column j sees columns j - reach_h .. j - 1 of its row (padded left, cut right)
        reach_h = self.first_horizontal.kernel_size[1]
        h = self.first_horizontal(F.pad(x, (reach_h, 0, 0, 0)))[:, :, :, :width]
        bias = next(biases)
        h = self._gate(h + self.first_link(v) + bias)
        v = self._gate(v + bias)
        for vertical, horizontal, link, residual in zip(self.vertical, self.horizontal, self.links, self.residuals):
            # v at row i already depends on rows above i alone: a convolution over rows i - reach .. i keeps that
            bias = next(biases)
            v_pre = vertical(F.pad(v, (self.reach, self.reach, self.reach, 0))) + bias
            # h at (i, j) depends on earlier positions alone: a convolution over columns j - reach .. j keeps that
            h_pre = horizontal(F.pad(h, (self.reach, 0, 0, 0))) + link(v_pre) + bias
            h = h + residual(self._gate(h_pre))
            v = self._gate(v_pre)
        return self.out(F.relu(h))

    nll = CodePrior.nll
    sample = CodePrior.sample


def _label_biases(labels: int, width: int, layers: int) -> nn.ModuleList | None:
    """One learned bias of `width` channels per class for each of `layers` layers (zeros at the start, so a
    conditioned prior starts as the unconditioned one); None without labels."""
    if not labels:
        return None
    biases = nn.ModuleList(nn.Embedding(labels, width) for _ in range(layers))
    for bias in biases:
        nn.init.zeros_(bias.weight)
    return biases


def _label_terms(prior: nn.Module, y: torch.Tensor | None, batch: int) -> Iterator[torch.Tensor | int]:
    """Each layer's class bias in turn, (B, width, 1, 1), for a prior that takes labels; zeros for one that does
    not. A prior that takes labels refuses to go without them, and one that takes none refuses them."""
    if prior.conditions is None:
        if y is not None:
            raise VaekitError("labels were given, but this vqvae's prior is not conditioned on labels: leave them out")
        return itertools.repeat(0)
    if y is None:
        raise VaekitError(f"this vqvae's prior is conditioned on labels (0..{prior.labels - 1}): pass the labels")
    if tuple(y.shape) != (batch,):
        raise VaekitError(f"the prior takes one label per code grid: got {tuple(y.shape)} for {batch} grids")
    return (bias(y)[:, :, None, None] for bias in prior.conditions)


class GridPrior(Distribution):
    """The learned prior as a distribution over flattened quantised grids (what `Model.sample_prior` draws and the
    decoder reads): sample() draws code grids and looks up their vectors; log_prob(z) is log p of the codes nearest
    to z's vectors (where codebook entries are equal, the first of them: a lower bound on log p(z), which sums over
    every grid whose vectors are z's; a restart can leave two equal entries until the copy no position takes moves
    again). Given labels y (n,) (a prior conditioned on them), p(z | y) for each: a batch of n."""

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector

    def __init__(self, model: "VQVAE", y: torch.Tensor | None = None) -> None:
        self.model, self.labels = model, y
        batch = torch.Size() if y is None else torch.Size([y.shape[0]])
        super().__init__(batch_shape=batch, event_shape=torch.Size([model.latent_dim]), validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        n = math.prod(sample_shape)
        if self.labels is not None:  # every draw of the sample shape for each label
            y = self.labels.repeat(n)
            codes = self.model.prior_net.sample(len(y), self.model.grid, self.model.device, y)
            return self.model.lookup(codes).reshape(*sample_shape, *self.batch_shape, self.model.latent_dim)
        codes = self.model.prior_net.sample(n, self.model.grid, self.model.device)
        return self.model.lookup(codes).reshape(*sample_shape, self.model.latent_dim)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        flat = value.reshape(-1, self.model.latent_dim)
        codes = self.model.nearest(flat.reshape(flat.shape[0], -1, self.model.config.latent_dim)).view(-1, *self.model.grid)
        y = None if self.labels is None else self.labels.expand(*value.shape[:-1]).reshape(-1)
        return -self.model.prior_net.nll(codes, y).reshape(value.shape[:-1])


@register_family("vqvae")
class VQVAE(Model):
    """A discrete codebook at every position of the code grid (model.latent_dim numbers per code); straight-through
    gradients, commitment loss, the codebook learned by its loss or by EMA (model.vqvae.ema). The objective is
    recon + beta * kl_scale * (codebook + commitment_weight * commitment); it has no likelihood bound (like the ae).
    Terms: recon, commitment (||z_e - e||^2 summed over the grid; the codebook loss has the same value) and
    perplexity (exp of the entropy of the batch's code usage, the same for every item). The prior over the codes
    is a second stage (stages = ("prior",)): until it is trained, sampling is refused."""

    has_bound = False
    codes_follow_prior = False  # its prior is learned afterwards, over the codebook's entries
    takes_free_bits = False  # no KL to floor
    posterior_params = 1
    stages = (STAGE_PRIOR,)

    @property
    def prior_text(self) -> str:
        return "its learned autoregressive prior over the code grid" + (", given the class" if self.num_labels else "")

    @dataclass(frozen=True)
    class Settings:
        codebook: int = setting(512, "codes in the vqvae family's codebook (the paper's 512)",
                                check=(lambda v: 2 <= v <= 65_536, "between 2 and 65536"))
        commitment: float = setting(0.25, "weight of the vqvae commitment loss (the paper's 0.25)",
                                    check=(non_negative, ">= 0"))
        ema: bool = setting(False, "learn the vqvae codebook by exponential moving averages of the encoder outputs "
                                   "each code receives, instead of by the codebook loss")
        decay: float = setting(0.99, "decay of the vqvae EMA codebook updates (the paper's 0.99), and of the "
                                     "decayed use per step by which unused codes are restarted (unless "
                                     "--vqvae-no-restart)",
                               check=(lambda v: 0 < v < 1, "between 0 and 1, e.g. 0.99"))
        positions: int = setting(8, "code positions of a vqvae on data without a spatial grid (MLP networks)",
                                 check=(lambda v: 1 <= v <= 4096, "between 1 and 4096"))
        prior_channels: int = setting(64, "channels of the vqvae's autoregressive prior over codes",
                                      check=(lambda v: 1 <= v <= 4096, "between 1 and 4096"))
        prior_layers: int = setting(6, "residual layers of the vqvae's prior over codes (after its first)",
                                    check=(lambda v: 0 <= v <= 64, "between 0 and 64"))
        prior: str = setting("gated", "the vqvae's prior over codes: gated, the gated PixelCNN, whose two stacks see "
                             "every earlier position within their reach (with 6 layers, all of a 7x7 or 8x8 grid), "
                             "or pixelcnn, the first PixelCNN's masked convolutions, which leave a blind spot (the "
                             "only one before vaekit had gated; its runs keep it)",
                             choices=PRIOR_NETWORKS)
        restart: bool = setting(True, "do not restart vqvae codes unused for long (the paper's codebook); by "
                                      "default a code whose decayed use per step falls below restart_below and that "
                                      "went unused in the step moves to a random encoder output of the batch "
                                      "(Dhariwal et al. 2020)",
                                flag="--vqvae-no-restart")
        restart_below: float = setting(1.0, "decayed per-step usage under which a vqvae code counts as dead",
                                       check=(non_negative, ">= 0"), cli=False)
        init_scale: float = setting(1.0, "codes start at encoder outputs of training items times this (1: as "
                                         "they are)", check=(positive, "> 0"), cli=False)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        k, d = self.settings.codebook, config.latent_dim
        start = torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k)  # the paper's start; init_from_data replaces it
        if self.settings.ema:
            self.register_buffer("codebook", start)
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_sum", start.clone())
        else:
            self.codebook = nn.Parameter(start)
        # decayed uses per step of each code (restarts read it); 0 at the start, so the first training step moves
        # every code it did not use to its encoder outputs: a start from the data even without init_from_data
        self.register_buffer("usage", torch.zeros(k))
        prior_network = GatedCodePrior if self.settings.prior == "gated" else CodePrior
        self.prior_net = prior_network(k, self.settings.prior_channels, self.settings.prior_layers,
                                       labels=self.num_labels)
        self.prior_net.requires_grad_(False)  # trained in its own stage
        self.stage: str | None = None
        self.prior_outdated_checked = False  # whether this object's first training step has looked at the prior

    # ---- shapes and networks ---------------------------------------------------------------------------------
    def build_networks(self) -> tuple[nn.Module, nn.Module]:
        cfg = self.config
        d = cfg.latent_dim
        labels = self.num_labels
        if resolve_network(cfg) == "conv":
            channels = cfg.conv_channels
            in_channels, height, width = cfg.data_shape
            self.grid = (_conv_sizes(height, len(channels))[-1], _conv_sizes(width, len(channels))[-1])
            return (GridEncoder(in_channels, channels, d, cfg.activation, labels),
                    GridDecoder(cfg.data_shape, channels, d, self.likelihood.param_channels, cfg.activation, labels))
        self.grid = (1, self.settings.positions)
        size = self.settings.positions * d
        return (MLPEncoder(cfg.data_shape, cfg.hidden_dims, size, labels, activation=cfg.activation),
                MLPDecoder(cfg.data_shape, cfg.hidden_dims, size, self.likelihood.param_channels, labels,
                           activation=cfg.activation))

    @property
    def positions(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def latent_dim(self) -> int:
        """Numbers in a flattened quantised grid: positions x model.latent_dim."""
        return self.positions * self.config.latent_dim

    def code_number_name(self, d: int) -> str:
        """z[d] with its place: d is number d % D of the vector at grid position d // D (raster order)."""
        position, number = divmod(d, self.config.latent_dim)
        row, column = divmod(position, self.grid[1])
        return f"z[{d}] (row {row}, column {column}, number {number})"

    def _vectors(self, params: torch.Tensor) -> torch.Tensor:
        """The encoder's output as (B, positions, D), positions in raster order."""
        if params.dim() == 4:  # (B, D, H, W)
            return params.flatten(2).transpose(1, 2)
        return params.reshape(params.shape[0], self.positions, self.config.latent_dim)

    def decoder_params(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, positions * D), flattened in raster order, to the decoder's input."""
        if isinstance(self.decoder, GridDecoder):
            d = self.config.latent_dim
            z = z.reshape(z.shape[0], *self.grid, d).permute(0, 3, 1, 2)
        return super().decoder_params(z, y)

    # ---- the codebook ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """The index of the nearest code of each vector: (..., D) -> (...), by squared distance, in float32 even
        under autocast (in bfloat16 most of a fresh codebook's choices came out different)."""
        with torch.autocast(vectors.device.type, enabled=False):
            flat = _full_precision(vectors.reshape(-1, vectors.shape[-1]))
            book = _full_precision(self.codebook)
            distances = flat.square().sum(1, keepdim=True) - 2 * flat @ book.T + book.square().sum(1)
            return distances.min(1).indices.view(vectors.shape[:-1])  # (2.3x faster than argmin on the AMX Xeon)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code indices (B, H, W) or (B, positions) -> flattened quantised grids (B, positions * D)."""
        return self.codebook[codes.reshape(codes.shape[0], -1)].flatten(1)

    def discrete_codes(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Each item's code indices (B, H, W)."""
        return self.nearest(self._vectors(self.encoder_params(x, y))).view(-1, *self.grid)

    def init_from_data(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Codes start at the encoder's outputs for random positions of random training items (distinct where
        there are enough; y their labels, for a label-conditioned model), so every code starts where the data is
        and none starts unused far away."""
        k = self.settings.codebook
        chosen = torch.randperm(x.shape[0])[: max(1, min(x.shape[0], 4 * k // self.positions + 1, 2048))]
        labels = None if y is None else y[chosen]
        with torch.no_grad():
            params = self.encoder_params(x[chosen].to(self.device), labels)
            vectors = self._vectors(params).reshape(-1, self.config.latent_dim)
            pick = torch.randperm(vectors.shape[0])[:k] if vectors.shape[0] >= k else torch.randint(vectors.shape[0], (k,))
            start = vectors[pick] * self.settings.init_scale
            self.codebook.copy_(start)
            if self.settings.ema:
                self.ema_sum.copy_(start)
                self.ema_count.fill_(1.0)

    @torch.no_grad()
    def _ema_update(self, vectors: torch.Tensor, codes: torch.Tensor) -> None:
        """N_k <- decay N_k + (1 - decay) n_k; m_k <- decay m_k + (1 - decay) sum of the vectors given code k;
        e_k = m_k / N_k, with N_k Laplace-smoothed so an unused code keeps a finite place."""
        decay, k = self.settings.decay, self.settings.codebook
        flat, index = vectors.reshape(-1, vectors.shape[-1]).to(self.ema_sum.dtype), codes.reshape(-1)
        counts = _counts(index, k, flat)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, index, flat)
        self.ema_count.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (total + k * 1e-5) * total
        self.codebook.copy_(self.ema_sum / smoothed[:, None])

    @torch.no_grad()
    def _restart(self, vectors: torch.Tensor, codes: torch.Tensor) -> None:
        """Each code's decayed use per step; a code whose use has fallen below restart_below and that no position took
        this step moves to a random encoder output of this batch (and counts as used once), without a host sync."""
        k, decay = self.settings.codebook, self.settings.decay
        counts = _counts(codes.reshape(-1), k, self.usage)
        self.usage.mul_(decay).add_(counts, alpha=1 - decay)
        # below the threshold and unused this step (a code this step's items took keeps its place, so their quantised
        # vectors stay theirs). Where a batch holds fewer vectors than codes, most codes go unused every step and keep
        # moving to recent encoder outputs: tried scaled down to the batch's vectors per code instead, the codes then
        # stayed put for tens of steps and lagged the encoder (the conformance suite's 30 steps raised the loss).
        dead = (self.usage < self.settings.restart_below) & (counts == 0)
        flat = vectors.detach().reshape(-1, vectors.shape[-1]).to(self.codebook.dtype)
        fresh = flat[torch.randint(flat.shape[0], (k,), device=flat.device)]
        self.codebook.copy_(torch.where(dead[:, None], fresh, self.codebook))
        self.usage.copy_(torch.where(dead, torch.ones_like(self.usage), self.usage))
        if self.settings.ema:
            self.ema_sum.copy_(torch.where(dead[:, None], fresh, self.ema_sum))
            self.ema_count.copy_(torch.where(dead, torch.ones_like(self.ema_count), self.ema_count))

    # ---- the contract ----------------------------------------------------------------------------------------
    def posterior(self, params: torch.Tensor) -> Distribution:
        """The quantised grid, flattened, as a point mass."""
        vectors = self._vectors(params)
        return PointMass(self.codebook[self.nearest(vectors)].flatten(1))

    def prior(self) -> Distribution:
        """p(z) over flattened quantised grids; for a label-conditioned model, draws and densities need the labels
        (prior_given)."""
        if not int(self.prior_net.trained):
            raise VaekitError("this vqvae's prior over its codes is not trained (or not since the model last "
                              "trained), so it cannot sample: train it with vaekit train-prior RUN (the second "
                              "stage), or draw from a mixture fitted to its codes: vaekit sample RUN --sampler mixture")
        return GridPrior(self)

    def prior_given(self, y: torch.Tensor | None) -> Distribution:
        """p(z | y) for each label y (n,), the prior of a label-conditioned model (the gated PixelCNN's class
        conditioning); prior() for one that is not conditioned."""
        prior = self.prior()
        return prior if y is None else GridPrior(self, y)

    def closed_form_kl(self, qz: Distribution, y: torch.Tensor | None = None) -> torch.Tensor | None:
        return None

    def regularizer_terms(self, qz: Distribution, z: torch.Tensor,
                          y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {}

    @classmethod
    def processes_refused(cls, settings: Any) -> str | None:
        settings = settings if settings is not None else cls.Settings()
        if settings.ema or settings.restart:
            return ("the vqvae's EMA codebook and code restarts follow each process's own share of the batch, and the "
                    "processes' codebooks would drift apart: train it in one process (drop --nproc), or use "
                    "--vqvae-no-restart without model.vqvae.ema")
        return None

    def set_stage(self, stage: str | None) -> None:
        """None: the model itself (encoder, decoder, codebook) trains; "prior": the prior over codes alone, on the
        codes of the frozen model."""
        if stage not in (None, *self.stages):
            raise VaekitError(f"the vqvae family has no training stage {stage!r}: its stages are {list(self.stages)}")
        self.stage = stage
        for name, parameter in self.named_parameters():
            parameter.requires_grad_((name.split(".")[0] == "prior_net") == (stage == STAGE_PRIOR))

    def stage_module(self, stage: str) -> nn.Module:
        if stage != STAGE_PRIOR:
            return super().stage_module(stage)
        return self.prior_net  # its weights and its count of training steps

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_scale: float = 1.0) -> Output:
        if self.stage == STAGE_PRIOR:
            return self._prior_forward(x, y)
        vectors = self._vectors(self.encoder_params(x, y))  # (B, P, D)
        codes = self.nearest(vectors)  # (B, P)
        quantised = self.codebook[codes]
        if self.training and _several_processes() and (reason := self.processes_refused(self.settings)):
            raise VaekitError(reason)  # a process group set up by the user (vaekit refuses it before a run starts)
        if self.training:
            # Training the model itself moves its codes, so a prior trained on the old ones (train-prior, then a
            # resumed run) no longer describes them: it is marked untrained, its weights kept for train-prior to
            # start from, so that sampling asks for train-prior again. Every step, with no host sync, so that a
            # rolled-back step cannot bring the mark back.
            if not self.prior_outdated_checked:
                self._warn_if_prior_trained()
            self.prior_net.trained.zero_()
            if self.settings.ema:
                self._ema_update(vectors, codes)
            if self.settings.restart:
                self._restart(vectors, codes)
            quantised = self.codebook[codes]
        commitment = (vectors - quantised.detach()).square().flatten(1).sum(1)  # (B,)
        vq = self.settings.commitment * commitment
        if not self.settings.ema:
            vq = vq + (vectors.detach() - quantised).square().flatten(1).sum(1)  # the codebook loss
        straight = vectors + (quantised - vectors).detach()  # forward: the codes; backward: to the encoder
        recon = self.likelihood.nll(self.decoder_params(straight.flatten(1), y), x)
        loss = (recon + (self.config.beta * kl_scale) * vq).mean()
        usage = _counts(codes.reshape(-1), self.settings.codebook, recon)
        perplexity = distributions.perplexity(usage).expand(x.shape[0])
        return Output(loss=loss, terms={"recon": recon, "commitment": commitment, "perplexity": perplexity}, elbo=None)

    def _warn_if_prior_trained(self) -> None:
        """Said once per object (one host sync, on the first training step): the prior the step is about to mark
        untrained had been trained."""
        self.prior_outdated_checked = True
        if int(self.prior_net.trained):
            log.warning("training the vqvae further moves its codes, so its prior over them (from vaekit train-prior) "
                        "no longer fits: sampling waits for vaekit train-prior RUN again, which starts from the old "
                        "prior's weights")

    def _prior_forward(self, x: torch.Tensor, y: torch.Tensor | None) -> Output:
        with torch.no_grad():
            codes = self.discrete_codes(x, y)
        nll = self.prior_net.nll(codes, self.label_indices(y, x.shape[0]))
        if self.training:
            self.prior_net.trained.add_(1)
        return Output(loss=nll.mean(), terms={"prior_nll": nll}, elbo=None)

    def evaluation_terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per item: -log p(codes) under the learned prior (nats), where it is trained."""
        if not int(self.prior_net.trained):
            return {}
        return {"prior_nll": self.prior_net.nll(self.discrete_codes(x, y), self.label_indices(y, x.shape[0]))}


def _counts(index: torch.Tensor, k: int, like: torch.Tensor) -> torch.Tensor:
    """How often each of k codes occurs in index, as like's float dtype (no host sync, unlike bincount on a GPU)."""
    return torch.zeros(k, dtype=like.dtype, device=like.device).index_add_(
        0, index, torch.ones(index.shape, dtype=like.dtype, device=like.device))


def _several_processes() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1


class GridEncoder(nn.Module):
    """Stride-2 convolutions (--conv-channels), a 3x3 convolution and a 1x1 projection to D channels: (B, D, h, w).
    A condition (the one-hot label, `condition_features` of them) enters as constant channels beside the image's."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], dim: int, activation: str = "relu",
                 condition_features: int = 0) -> None:
        super().__init__()
        self.body = nn.Sequential(*downsampling_convs(in_channels + condition_features, channels, activation),
                                  nn.Conv2d(channels[-1], channels[-1], 3, padding=1), ACTIVATIONS[activation](),
                                  nn.Conv2d(channels[-1], dim, 1))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(_with_channels(x, c))


class GridDecoder(nn.Module):
    """The mirror: a 3x3 convolution from D channels, then transposed stride-2 convolutions back to the image's size
    (output padding restores odd sizes) with the likelihood's parameter channels. A condition enters as constant
    channels beside the code grid's."""

    def __init__(self, data_shape: tuple[int, ...], channels: tuple[int, ...], dim: int, param_channels: int,
                 activation: str = "relu", condition_features: int = 0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim + condition_features, channels[-1], 3, padding=1),
                                  ACTIVATIONS[activation](),
                                  *upsampling_convs(data_shape, channels, param_channels, activation))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(_with_channels(z, c))


def _with_channels(x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """x (B, C, H, W) with the condition c (B, L) as L more channels, constant over the grid."""
    if c is None:
        return x
    return torch.cat([x, c.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])], dim=1)
