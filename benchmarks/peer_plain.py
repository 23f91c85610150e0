"""Peer benchmark: the issue's MLP VAE in the textbook PyTorch loop most users write by hand.

Modelled on pytorch/examples vae/main.py: DataLoader(TensorDataset(x), batch_size=128,
shuffle=True), each batch binarised with torch.bernoulli (dynamic binarisation), loss =
F.binary_cross_entropy_with_logits summed over pixels and batch + analytic KL (summed, as the
example does), Adam lr 1e-3, loss.item() every step. Runs in either venv (needs torch, numpy,
safetensors), one process per run, e.g.
    python benchmarks/peer_plain.py --data fashion-mnist --epochs 1 \
        --out benchmarks/results/plain-fashion-mnist.json

Timing: an epoch is the whole `for (x,) in loader` loop (batching, binarisation, forward,
backward, Adam step); data loading from disk and the weight export are outside it.
Outputs: --out JSON and weights in the layout of bench_common.py (the last epoch's model).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import bench_common as common


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc0 = nn.Linear(784, 512)
        self.enc1 = nn.Linear(512, 256)
        self.enc2 = nn.Linear(256, common.LATENT_DIM)  # mu
        self.enc3 = nn.Linear(256, common.LATENT_DIM)  # log sigma^2
        self.dec0 = nn.Linear(common.LATENT_DIM, 256)
        self.dec1 = nn.Linear(256, 512)
        self.dec2 = nn.Linear(512, 784)

    def encode(self, x):
        hidden = F.relu(self.enc1(F.relu(self.enc0(x))))
        return self.enc2(hidden), self.enc3(hidden)

    def decode(self, z):
        return self.dec2(F.relu(self.dec1(F.relu(self.dec0(z)))))  # Bernoulli logits

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation
        return self.decode(z), mu, logvar


def loss_function(logits, x, mu, logvar):
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    # KL(N(mu, sigma^2) || N(0, I)), Kingma & Welling 2014, appendix B.
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return reconstruction + kl


def train_epoch(model, optimizer, loader) -> tuple[float, float, float]:
    """Returns (wall seconds, process CPU seconds, mean loss per image) of one pass."""
    model.train()
    total_loss = 0.0
    start, start_cpu = time.perf_counter(), time.process_time()
    for (grey,) in loader:
        x = torch.bernoulli(grey)
        optimizer.zero_grad()
        logits, mu, logvar = model(x)
        loss = loss_function(logits, x, mu, logvar)
        loss.backward()
        total_loss += loss.item()
        optimizer.step()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    return seconds, cpu_seconds, total_loss / len(loader.dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data_dir = common.resolve_data_dir(args.data, args.data_dir)
    train_grey = common.load_split(args.data, data_dir, "train", args.limit)
    record = common.base_record(
        "plain-pytorch", args, data_dir, len(train_grey),
        loss="binary_cross_entropy_with_logits + analytic KL, summed over pixels and batch",
        binarisation="dynamic: torch.bernoulli on each batch",
    )

    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=common.LEARNING_RATE)
    loader = DataLoader(TensorDataset(train_grey), batch_size=common.BATCH_SIZE, shuffle=True)
    epoch_seconds, epoch_cpu_seconds, losses = [], [], []
    for epoch in range(1, args.epochs + 1):
        seconds, cpu_seconds, loss = train_epoch(model, optimizer, loader)
        epoch_seconds.append(seconds)
        epoch_cpu_seconds.append(cpu_seconds)
        losses.append(loss)
        print(f"epoch {epoch}: {seconds:.2f} s (CPU {cpu_seconds:.2f} s), "
              f"loss {loss:.2f} nats/image", flush=True)

    record.update(common.timing_summary(epoch_seconds, epoch_cpu_seconds, len(train_grey)))
    record["train_loss_per_epoch"] = losses
    record["peak_rss_mib_after_training"] = common.peak_rss_mib()
    path = common.weights_path(args)
    common.save_weights(path, dict(model.named_children()), peer="plain-pytorch")
    record["weights"] = {"path": str(path), "source": "last epoch", "epoch": args.epochs}
    common.finish(args, record, "plain")


if __name__ == "__main__":
    main()
