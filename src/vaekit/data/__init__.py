"""Data sets as in-memory tensors: a registry of named loaders, user files, and index-based batching."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..config import DataConfig
from ..errors import VaekitError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """A whole data set in memory. Images are float32 (N, C, H, W) in [0, 1]; vectors are (N, D)."""

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None = None  # int64 class labels (N,)
    y_test: torch.Tensor | None = None
    label_names: tuple[str, ...] | None = None  # label_names[k] names class k
    # Named per-item attributes (continuous or 0/1), e.g. generative factors or CelebA columns: name -> (N,)
    attributes_train: dict[str, torch.Tensor] = field(default_factory=dict)
    attributes_test: dict[str, torch.Tensor] = field(default_factory=dict)
    is_image: bool = False
    binary: bool = False  # values are exactly 0/1 already
    table: Any = None  # a table's columns (vaekit.data.tables.TableSchema): how rows were encoded and decode back

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def value_range(self) -> tuple[float, float]:
        # No concatenated copy of the whole data set just to find two numbers.
        return (min(float(self.x_train.min()), float(self.x_test.min())),
                max(float(self.x_train.max()), float(self.x_test.max())))

    def split(self, name: str) -> "TensorData":
        if name not in ("train", "test"):
            raise VaekitError(f"unknown split {name!r}: use train or test")
        x, y = (self.x_train, self.y_train) if name == "train" else (self.x_test, self.y_test)
        return TensorData(x, y)


@dataclass(frozen=True)
class TensorData:
    """Tensors batched by index: one gather per batch, no per-item Python calls."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    dynamic_binarize: bool = False  # a fresh Bernoulli draw of the whole set each epoch

    def __len__(self) -> int:
        return self.x.shape[0]

    def part(self, rank: int, processes: int) -> "TensorData":
        """Every processes-th item from the rank on (evaluation's share of a process: no padding, no item twice)."""
        if processes == 1:
            return self
        return replace(self, x=self.x[rank::processes], y=None if self.y is None else self.y[rank::processes])

    def to(self, device: torch.device | str) -> "TensorData":
        return replace(self, x=self.x.to(device), y=None if self.y is None else self.y.to(device))

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        skip: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Batches in order, or in a permutation drawn from `generator`. skip: leave out the first batches as if
        they had been yielded (continuing an epoch): the same permutation, and the CPU binarisation stream advanced
        past them; other devices draw from their global generator, which a resume restores as it was after them.

        shard (rank, processes): this process's share, by DistributedSampler's rule: the order padded with its first
        items to a multiple of the processes, then every processes-th item from the rank on. Every process draws the
        same permutation (the same generator state) and gets as many batches, and batch k of all processes together
        is batch k of one process taking batches `processes` times larger."""
        rank, processes = shard
        x, y = self.x, self.y
        order = torch.randperm(len(self), generator=generator, device="cpu").to(x.device) if shuffle else None
        draw = dynamic_draws(x.device, generator, stream=rank if processes > 1 else None) if (
            self.dynamic_binarize) else None
        if processes > 1:
            order = order if order is not None else torch.arange(len(self), device=x.device)
            padded = torch.cat([order, order[: (-len(order)) % processes]]) if len(order) else order
            order = padded[rank::processes]
        n = len(self) if order is None else len(order)
        stop = n - n % batch_size if drop_last else n
        for number, start in enumerate(range(0, stop, batch_size)):
            if number < skip:
                if draw is not None and x.device.type == "cpu":
                    draw(x[: min(batch_size, n - start)])  # the same count of draws; the values are not needed
                continue
            if order is None:
                xb, yb = x[start : start + batch_size], None if y is None else y[start : start + batch_size]
            else:
                index = order[start : start + batch_size]
                xb, yb = x.index_select(0, index), None if y is None else y.index_select(0, index)
            if draw is not None:
                xb = draw(xb)
            yield xb, yb


def bernoulli_draw(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x ~ Bernoulli(p) elementwise as U < p with U ~ Uniform[0, 1): exact to float32, and about twice as fast on a
    CPU as torch.bernoulli. (A CPU generator cannot drive another device.)"""
    on_cpu = p.device.type == "cpu"
    uniform = torch.rand(p.shape, generator=generator if on_cpu else None, device=p.device, dtype=p.dtype)
    return (uniform < p).to(p.dtype)


def dynamic_draws(device: torch.device, generator: torch.Generator | None = None,
                  stream: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """One epoch's dynamic binarisation: a function p -> x ~ Bernoulli(p), seeded from `generator` (so a run's draws
    follow its seed and resume with it). `stream`: a process's own stream of draws, when several share a generator.

    On the CPU it compares 16-bit uniform integers u from numpy's PCG64 with 65536 p: P(x = 1) = ceil(65536 p) / 65536,
    within 2^-16 of p and exact at p = 0 and p = 1. That is 3-5x faster per batch than torch.rand (a 32-bit
    Mersenne Twister draw per pixel), which cost 5-8% of a training step. Other devices draw with torch there."""
    if device.type != "cpu":
        return bernoulli_draw
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    bits = np.random.PCG64(seed if stream is None else np.random.SeedSequence([seed, stream]))

    def draw(p: torch.Tensor) -> torch.Tensor:
        probability = p.numpy()
        u = bits.random_raw(-(-probability.size // 4)).view(np.uint16)[: probability.size].reshape(probability.shape)
        scaled = probability.astype(np.float32, copy=False) * 65536  # (float16 would overflow at 65536)
        return torch.from_numpy((u < scaled).astype(probability.dtype))

    return draw


def binarize_static(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One fixed Bernoulli draw (the test set of dynamically binarised training), reproducible by seed."""
    return bernoulli_draw(x, torch.Generator().manual_seed(seed))


Loader = Callable[[DataConfig], Dataset]
DATASETS: dict[str, Loader] = {}
DESCRIPTIONS: dict[str, str] = {}


SIZED: set[str] = set()  # registered data sets drawn at data.image_size (generated ones): the others ignore it


def register_dataset(name: str, description: str, sized: bool = False) -> Callable[[Loader], Loader]:
    """Add a named data set; `sized`: it is made at data.image_size (which is refused for the others)."""
    def add(loader: Loader) -> Loader:
        DATASETS[name] = loader
        DESCRIPTIONS[name] = description
        if sized:
            SIZED.add(name)
        return loader

    return add


def load_dataset(cfg: DataConfig, table: Any = None, all_rows: bool = False, label_given: bool = False) -> Dataset:
    """A registered name, or a path to user data; then the optional limit and static binarisation. `table`: a
    trained model's columns (TableSchema), so a table is read with the model's statistics; all_rows: a new table
    for that model, read whole and in order (both splits hold every row), whose label column is optional unless
    `label_given` (the user named it)."""
    _import_loaders()
    if cfg.name in DATASETS:
        if Path(cfg.name).exists():
            log.warning("--data %s is vaekit's built-in data set; the %s %s here is not read: give it as a path "
                        "(./%s) to use it", cfg.name, "folder" if Path(cfg.name).is_dir() else "file", cfg.name,
                        cfg.name)
        if table is not None:
            raise VaekitError(f"{cfg.name} is not a table, but the model was trained on one: give a .csv, .tsv or "
                              ".parquet file with its columns")
        dataset = DATASETS[cfg.name](cfg)
    elif Path(cfg.name).expanduser().exists():
        from .user import load_user_data

        dataset = load_user_data(cfg, table, all_rows, label_given)
    elif is_path(cfg.name):
        raise VaekitError(f"data path {cfg.name} does not exist: check the path (a run reads its data from where it "
                          "was when the run trained; if it moved, give its new path with --data, also to train "
                          "--resume and train-prior)")
    else:
        import difflib

        close = difflib.get_close_matches(cfg.name, list(DATASETS), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise VaekitError(
            f"unknown dataset {cfg.name!r}: {hint}use one of {', '.join(sorted(DATASETS))}, "
            "or a path to a .npy/.npz file, a table (.csv/.tsv/.parquet) or an image folder"
        )
    if cfg.limit is not None:
        dataset = replace(
            dataset,
            x_train=dataset.x_train[: cfg.limit],
            y_train=None if dataset.y_train is None else dataset.y_train[: cfg.limit],
            attributes_train={k: v[: cfg.limit] for k, v in dataset.attributes_train.items()},
        )
    if cfg.binarize != "none":
        low, high = dataset.value_range
        if low < 0 or high > 1:
            raise VaekitError(
                f"--binarize needs values in [0, 1], but {dataset.name} spans [{low:g}, {high:g}]: rescale it first"
            )
        # The test set is binarised once with a fixed seed, so every evaluation sees the same bits.
        dataset = replace(dataset, x_test=binarize_static(dataset.x_test, seed=0), binary=True)
        if cfg.binarize == "static":
            dataset = replace(dataset, x_train=binarize_static(dataset.x_train, seed=1))
    return dataset


EARLY_STOPPING_VALIDATION = 0.1  # the share held out when early stopping is on and --validation is not given
VALIDATION_SEED = 2  # one fixed choice of held-out items (and of their bits, for dynamic binarisation): every seed
# and every resume of a run holds out the same items


def validation_items(cfg: DataConfig, n_train: int, early_stopping: bool = False) -> int:
    """How many training items cfg.validation holds out (None: a tenth with early stopping, else none)."""
    share = cfg.validation if cfg.validation is not None else EARLY_STOPPING_VALIDATION if early_stopping else 0.0
    if share == 0:
        return 0
    n = int(round(share * n_train)) if share < 1 else int(share)
    if not 1 <= n < n_train:
        raise VaekitError(f"--validation {share:g} would hold out {n} of the {n_train} training items: give a share "
                          f"between 0 and 1 or a count below {n_train} that leaves items on both sides")
    return n


def hold_out(dataset: Dataset, cfg: DataConfig, early_stopping: bool = False) -> tuple[Dataset, TensorData]:
    """The data set to train on and the data each epoch is judged on: the test split, or (cfg.validation, or
    early stopping) a validation split of training items chosen at random once and for all (VALIDATION_SEED),
    removed from the training items; with dynamic binarisation its bits are drawn once, as the test split's."""
    n = validation_items(cfg, len(dataset.x_train), early_stopping)
    if n == 0:
        if early_stopping:
            log.warning("no validation split (--validation 0, or a run written before vaekit held one out): early "
                        "stopping chooses its epoch on the test split, so the test figures of the kept model are "
                        "optimistic")
        return dataset, dataset.split("test")
    order = torch.randperm(len(dataset.x_train), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    held, kept = order[:n].sort().values, order[n:].sort().values
    x_val = dataset.x_train[held]
    if cfg.binarize == "dynamic":
        x_val = binarize_static(x_val, seed=VALIDATION_SEED)
    log.info("holding out %d of the %d training items for validation (--validation)", n, len(dataset.x_train))
    val = TensorData(x_val, None if dataset.y_train is None else dataset.y_train[held])
    trained = replace(dataset, x_train=dataset.x_train[kept],
                      y_train=None if dataset.y_train is None else dataset.y_train[kept],
                      attributes_train={k: v[kept] for k, v in dataset.attributes_train.items()})
    return trained, val


def is_path(name: str) -> bool:
    """Whether a --data value is meant as a path (a folder, or a file of a kind vaekit reads), not a registered data
    set's name."""
    from .user import FILE_SUFFIXES

    return any(sep in name for sep in ("/", "\\")) or name.startswith(("~", ".")) or \
        Path(name).suffix.lower() in FILE_SUFFIXES


def user_file(name: str) -> bool:
    """Whether a --data value names the user's own file or folder (one that exists), not a registered data set."""
    _import_loaders()
    return name not in DATASETS and Path(name).expanduser().exists()


def resolved_name(name: str) -> str:
    """A --data path made absolute, to tell whether two spellings name one file (u8.npy, ./u8.npy); a registered data
    set's name, or anything else, as given."""
    if not user_file(name):
        return name
    return str(Path(name).expanduser().resolve())


def fingerprint(dataset: Dataset) -> dict[str, Any]:
    """What identifies a data set's items as read: its splits' sizes, and a sha256 of their values and labels."""
    import hashlib

    digest = hashlib.sha256()
    for part in (dataset.x_train, dataset.x_test, dataset.y_train, dataset.y_test):
        if part is not None:
            array = np.ascontiguousarray(part.detach().cpu().numpy())
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.data)  # no copy of the values
    return {"train_items": len(dataset.x_train), "test_items": len(dataset.x_test), "sha256": digest.hexdigest()}


def train_data(dataset: Dataset, cfg: DataConfig) -> TensorData:
    return TensorData(dataset.x_train, dataset.y_train, dynamic_binarize=cfg.binarize == "dynamic")


def _import_loaders() -> None:
    """Loaders register themselves on import; importing here keeps the registry complete."""
    from . import builtin, faces  # noqa: F401


def available_datasets() -> dict[str, str]:
    """Every registered data set name with its one-line description."""
    _import_loaders()
    return dict(DESCRIPTIONS)
