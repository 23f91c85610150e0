"""Peer benchmark: the issue's MLP VAE trained by pythae 0.1.2 through its own TrainingPipeline.

Run in the bench venv (benchmarks/requirements-bench.txt), one process per run, e.g.
    .venv-bench/bin/python benchmarks/peer_pythae.py --data fashion-mnist --epochs 1 \
        --out benchmarks/results/pythae-fashion-mnist.json

How the model is expressed in pythae (its documented extension points, nothing patched):
- Custom BaseEncoder/BaseDecoder of exactly 784-512-256 -> (mu, logvar) 16 and 16-256-512-784.
  pythae's VAE with reconstruction_loss="bce" calls F.binary_cross_entropy on the decoder
  output, so the decoder returns sigmoid(logits): the same Bernoulli likelihood, computed on
  probabilities (pythae's loss, clamped at log >= -100 by torch), not on logits.
  The loss is sum over pixels, mean over the batch, plus the analytic KL.
- Dynamic binarisation: pythae has no option for it. Its documented route for custom data is
  a torch Dataset whose __getitem__ returns DatasetOutput(data=...) (pythae README,
  examples/notebooks/custom_dataset.ipynb), passed to the pipeline as train_data. Our
  __getitem__ draws torch.bernoulli(grey image) on every access, so every epoch sees a new
  binarisation, within one pipeline call (one Adam state; calling the pipeline once per epoch
  would rebuild the trainer and reset Adam, which is a different algorithm).
- BaseTrainerConfig(per_device_train_batch_size=128, learning_rate=1e-3, optimizer_cls="Adam",
  no scheduler, no eval set, so pythae keeps the best model on the training loss, no_cuda).

Timing: a TrainingCallback (pythae's callback API) stamps the start of each epoch's training
loop (on_train_step_begin) and every finished batch (on_train_step_end); an epoch's time is
start to last batch. This excludes pipeline setup (dataset checks, model sanity check,
output folders), the per-epoch deepcopy of the best model and the final save, but includes
pythae's per-batch costs (per-item __getitem__ + collate, tqdm bar, loss.item()).
The whole pipeline call is also timed (pipeline_wall_seconds).

Evaluation speed: pythae's own VAE.get_nll(data, n_samples=K, batch_size=B) on the first
--nll-images test images (one fixed seeded binarisation). Called as a user would: model.eval(),
no torch.no_grad() around it (pythae does not disable autograd inside get_nll). Note that
get_nll returns the mean log-likelihood estimate (a negative number), despite its name; the
record stores it and its negation in nats. If n_samples <= batch_size it uses batch_size
samples, so K should be a multiple of B.

Outputs: --out JSON (timings, peak RSS, losses, versions) and weights in the layout of
bench_common.py: the final model that pythae saves (its best-on-train copy).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import tempfile
import time

import torch
import torch.nn as nn

import bench_common as common

try:
    import pythae  # noqa: F401
except ImportError:
    raise SystemExit("peer_pythae.py runs pythae, which is not installed here: make bench installs it (the bench "
                     "extra), or pip install -r benchmarks/requirements-bench.txt in a venv of its own") from None
from pythae.data.datasets import DatasetOutput
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.pipelines import TrainingPipeline
from pythae.trainers import BaseTrainerConfig
from pythae.trainers.training_callbacks import TrainingCallback


class Encoder(BaseEncoder):
    def __init__(self):
        BaseEncoder.__init__(self)
        self.enc0 = nn.Linear(784, 512)
        self.enc1 = nn.Linear(512, 256)
        self.enc2 = nn.Linear(256, common.LATENT_DIM)  # mu
        self.enc3 = nn.Linear(256, common.LATENT_DIM)  # log sigma^2

    def forward(self, x: torch.Tensor) -> ModelOutput:
        hidden = torch.relu(self.enc1(torch.relu(self.enc0(x.reshape(x.shape[0], -1)))))
        return ModelOutput(embedding=self.enc2(hidden), log_covariance=self.enc3(hidden))


class Decoder(BaseDecoder):
    def __init__(self):
        BaseDecoder.__init__(self)
        self.dec0 = nn.Linear(common.LATENT_DIM, 256)
        self.dec1 = nn.Linear(256, 512)
        self.dec2 = nn.Linear(512, 784)

    def forward(self, z: torch.Tensor) -> ModelOutput:
        logits = self.dec2(torch.relu(self.dec1(torch.relu(self.dec0(z)))))
        # pythae's "bce" loss expects probabilities in [0, 1] shaped like the data.
        return ModelOutput(reconstruction=torch.sigmoid(logits).reshape(z.shape[0], 1, 28, 28))


class DynamicallyBinarisedDataset(torch.utils.data.Dataset):
    """Grey images; each access returns a fresh Bernoulli draw, as pythae's DatasetOutput."""

    def __init__(self, grey: torch.Tensor):
        self.grey = grey.reshape(-1, 1, 28, 28)

    def __len__(self) -> int:
        return len(self.grey)

    def __getitem__(self, index: int) -> DatasetOutput:
        return DatasetOutput(data=torch.bernoulli(self.grey[index]))


class EpochTimer(TrainingCallback):
    """Training-loop time per epoch, and pythae's logged epoch losses."""

    def __init__(self):
        self.epoch_seconds: list[float] = []
        self.epoch_cpu_seconds: list[float] = []
        self.batches: list[int] = []
        self.train_losses: list[float] = []
        self._start = self._last = self._start_cpu = self._last_cpu = 0.0
        self._count = 0

    def on_train_step_begin(self, training_config, **kwargs):
        self._count = 0
        self._start = self._last = time.perf_counter()
        self._start_cpu = self._last_cpu = time.process_time()

    def on_train_step_end(self, training_config, **kwargs):
        self._count += 1
        self._last = time.perf_counter()
        self._last_cpu = time.process_time()

    def on_epoch_end(self, training_config, **kwargs):
        self.epoch_seconds.append(self._last - self._start)
        self.epoch_cpu_seconds.append(self._last_cpu - self._start_cpu)
        self.batches.append(self._count)

    def on_log(self, training_config, logs, **kwargs):
        self.train_losses.append(float(logs["train_epoch_loss"]))


def time_get_nll(model: VAE, test_x: torch.Tensor, samples: int, batch_size: int) -> dict:
    model.eval()
    start = time.perf_counter()
    log_likelihood = model.get_nll(test_x, n_samples=samples, batch_size=batch_size)
    seconds = time.perf_counter() - start
    return {
        "images": len(test_x),
        "n_samples": samples,
        "batch_size": batch_size,
        "seconds": seconds,
        "seconds_per_1000_images": seconds * 1000.0 / len(test_x),
        "get_nll_return": float(log_likelihood),
        "nll_nats": -float(log_likelihood),
        "autograd_enabled": torch.is_grad_enabled(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--nll-images", type=int, default=100, help="0 skips the get_nll timing")
    parser.add_argument("--nll-samples", type=int, default=1000)
    parser.add_argument("--nll-batch-size", type=int, default=100, help="pythae's default is 100")
    parser.add_argument("--output-dir", default=None, help="pythae's own output (default: temp)")
    args = parser.parse_args()
    if args.nll_images and args.nll_samples % args.nll_batch_size:
        parser.error("--nll-samples must be a multiple of --nll-batch-size (see docstring)")

    torch.set_num_threads(args.threads)
    logging.getLogger("pythae").setLevel(logging.WARNING)
    data_dir = common.resolve_data_dir(args.data, args.data_dir)
    train_grey = common.load_split(args.data, data_dir, "train", args.limit)
    record = common.base_record(
        "pythae", args, data_dir, len(train_grey), pythae=importlib.metadata.version("pythae"),
        loss="pythae VAE bce: binary_cross_entropy(sigmoid(logits)) summed over pixels "
        "+ analytic KL, mean over the batch",
        binarisation="dynamic: torch.bernoulli in Dataset.__getitem__ on every access",
    )

    torch.manual_seed(args.seed)  # pythae seeds only at train start, after the model is built
    model = VAE(
        VAEConfig(input_dim=(1, 28, 28), latent_dim=common.LATENT_DIM, reconstruction_loss="bce"),
        encoder=Encoder(),
        decoder=Decoder(),
    )
    with tempfile.TemporaryDirectory(prefix="pythae-bench-") as scratch:
        config = BaseTrainerConfig(
            output_dir=args.output_dir or scratch,
            per_device_train_batch_size=common.BATCH_SIZE,
            learning_rate=common.LEARNING_RATE,
            optimizer_cls="Adam",
            num_epochs=args.epochs,
            seed=args.seed,
            no_cuda=True,
        )
        pipeline = TrainingPipeline(model=model, training_config=config)
        timer = EpochTimer()
        start = time.perf_counter()
        pipeline(train_data=DynamicallyBinarisedDataset(train_grey), callbacks=[timer])
        record["pipeline_wall_seconds"] = time.perf_counter() - start

    record.update(
        common.timing_summary(timer.epoch_seconds, timer.epoch_cpu_seconds, len(train_grey))
    )
    record["batches_per_epoch"] = timer.batches
    record["train_loss_per_epoch"] = timer.train_losses
    record["peak_rss_mib_after_training"] = common.peak_rss_mib()

    # The final model pythae saves is its best-on-train deepcopy; export exactly that one.
    final = pipeline.trainer._best_model
    best_epoch = 1 + min(range(len(timer.train_losses)), key=timer.train_losses.__getitem__)
    layers = {**dict(final.encoder.named_children()), **dict(final.decoder.named_children())}
    path = common.weights_path(args)
    common.save_weights(path, layers, peer="pythae")
    record["weights"] = {"path": str(path), "source": "pythae final_model (best on train loss)",
                         "epoch": best_epoch}

    if args.nll_images:
        test_grey = common.load_split(args.data, data_dir, "test")[: args.nll_images]
        test_x = common.binarised_test_set(test_grey, args.seed).reshape(-1, 1, 28, 28)
        record["get_nll"] = time_get_nll(final, test_x, args.nll_samples, args.nll_batch_size)
    common.finish(args, record, "pythae", f", get_nll {record['get_nll']['seconds_per_1000_images']:.1f} s/1000 images"
                  if args.nll_images else "")


if __name__ == "__main__":
    main()
