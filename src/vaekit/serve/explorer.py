"""What the explorer page asks of a trained model, as plain Python: decode a code, encode an item or an uploaded
picture, interpolate, apply an attribute vector (with its measured score), draw prior samples, map the codes.

Knows no model family: every operation goes through the model contract and vaekit.latent. Whatever is the same
for every request (the codes of the map, the dimensions' ranking, attribute vectors, scores) is computed once and
kept; requests that run the model take one lock, so a burst of them queues instead of oversubscribing the CPU. An
edit's score runs beside them on a background thread (the most recently asked-for score first).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .. import edits, latent, viz
from ..data import Dataset
from ..data.tables import model_table
from ..data import pictures
from ..errors import VaekitError
from ..models import Model, draw_prior

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 5 * 2**20  # a picture of a face or a digit is a few kB; 5 MB leaves room for a phone photo
MAX_CODE_VALUE = latent.MAX_CODE_VALUE
MAX_SAMPLES = 64
MAX_STEPS = 64
MAX_STRENGTH = 10.0
SCORE_STRENGTHS = (-2.0, -1.0, 0.0, 1.0, 2.0)
SCORE_ITEMS = 500  # test items a score edits (a random sample of this many where there are more)
# Items encoded per turn of the model lock while a split's codes are computed (an attribute vector's first use), so
# that decodes asked for meanwhile wait for one batch, not for the whole split
CODE_BATCH = 128
BORDER_ITEMS = 2000  # training pictures whose border sets the background an upload is compared with
BORDER_GAP = 0.5  # an upload's border mean this far from the training pictures' is the other background


class NotFound(VaekitError):
    """An item, attribute or label that does not exist (HTTP 404)."""


BadUpload = pictures.BadPicture  # an uploaded file of the wrong kind or size (HTTP 415 or 413)


@dataclass(frozen=True)
class Dimension:
    index: int  # in the flattened code
    score: float  # mean KL (or code variance): how much the model uses it
    low: float  # slider range: the prior's mean -+ 3 standard deviations (or the codes' where the prior has none)
    high: float
    mean: float


class Explorer:
    """One trained model and its data set, served to the explorer page (and to anyone using its JSON API)."""

    def __init__(self, model: Model, dataset: Dataset, split: str = "test", map_items: int = 2000,
                 run: str = "", score_items: int = SCORE_ITEMS, attribute_table: str | None = None,
                 edit_method: str = "mean-diff") -> None:
        if map_items < 2:
            raise VaekitError(f"--map-items must be at least 2, got {map_items}")
        self.model = model.eval()
        self.dataset = dataset
        self.split = split
        self.run = run
        self.score_items = score_items
        if edit_method not in edits.METHODS:
            raise VaekitError(f"unknown method {edit_method!r}: use one of {', '.join(edits.METHODS)}")
        self.edit_method = edit_method  # the run's config edits.method: used where none is asked for
        self.table = model_table(model.config)
        self.items = dataset.split(split)
        if len(self.items) < 2:
            raise VaekitError(f"the {split} split has {len(self.items)} item(s): the explorer needs at least 2")
        self.conditioned = bool(model.num_labels)
        self.code_size = latent.code_size(model)
        self.is_image = len(model.data_shape) == 3 and model.data_shape[0] in (1, 3)
        self._lock = _TurnLock()  # one model call at a time
        self._cache_lock = threading.Lock()  # the caches' dictionaries
        self._compute_lock = threading.Lock()  # one computation of a cached thing at a time, so none is done twice
        self._upload_lock = threading.BoundedSemaphore(1)  # one picture decoded at a time bounds their memory
        self._edits: dict[tuple[str, str], edits.AttributeEdit] = {}
        self._scores: dict[tuple[str, str], Future] = {}
        self._score_queue: list[tuple[tuple[str, str], Future]] = []
        self._score_wake = threading.Condition()
        self._closed = False
        self._train_codes: torch.Tensor | None = None
        self._split_codes: torch.Tensor | None = None
        self._training_border: float | None = None  # the training pictures' mean border value (background_note)
        # An attribute table's columns (0/1, one row per item of the served split, in order), as `vaekit attribute
        # --attr-file` reads them: their vectors come from the split's own codes.
        self.table_attributes: dict[str, torch.Tensor] = {}
        if attribute_table is not None:
            from ..data.user import load_attribute_table

            keys, columns = load_attribute_table(attribute_table)
            if len(keys) != len(self.items):
                raise VaekitError(f"{attribute_table} has {len(keys)} rows but the {split} split has {len(self.items)} "
                                  "items: rows are matched to items by order, so give one row per item of --split")
            self.table_attributes = {name: values.float() for name, values in columns.items()}

        n = min(map_items, len(self.items))
        x_map = self.items.x[:n]
        y_map = self._labels(self.items.y)[:n] if self.conditioned else None
        log.info("encoding %d %s items for the latent map", n, split)
        self.map = latent.latent_map(model, x_map, method="auto", y=y_map)
        scores = latent.dimension_scores(model, x_map, y=y_map).flatten()
        self.slider_range = "prior"  # what the sliders span: the prior's spread, or the served codes' own
        try:
            if not model.codes_follow_prior:  # an AE: its prior is nominal, and its codes lie where they lie
                raise VaekitError("no prior to range the sliders")
            mean, std = latent.prior_moments(model)
        except VaekitError:  # a prior over another shape than the code, or none: the codes' own spread
            codes = latent.encode_dataset(model, x_map, y=y_map).flatten(1)
            mean, std = codes.mean(0), codes.std(0)
            self.slider_range = "codes"
        order = torch.argsort(scores, descending=True, stable=True).tolist()
        self.dimensions = tuple(Dimension(int(d), float(scores[d]), float(mean[d] - 3 * std[d]),
                                          float(mean[d] + 3 * std[d]), float(mean[d])) for d in order)
        # a prior that takes the label: its mean for each class, what "prior mean" sets for the page's label (the
        # sliders span the prior over every class)
        self.label_centres = None
        if self.slider_range == "prior" and model.prior_takes_labels:
            self.label_centres = {name: [float(v) for v in latent.prior_moments(model, y=k)[0]]
                                  for k, name in enumerate(self._label_names()[:model.num_labels])}
        self.prior_kind = _prior_kind(model)
        self.identity = self._identity()
        # Started last, so a failed construction leaves no thread behind. A daemon: a score may take a minute and
        # cannot be interrupted, so a process that stops serving exits without it (`vaekit explore` exits with
        # os._exit, since an interpreter finalising under a running torch thread aborts).
        self._worker = threading.Thread(target=self._score_worker, name="vaekit-score", daemon=True)
        self._worker.start()

    # ---- what the page shows first ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        cfg, names = self.model.config, self._label_names()
        return {
            "run": self.run, "family": cfg.family, "data": self.dataset.name, "split": self.split,
            "items": len(self.items), "map_items": len(self.map.points), "data_shape": list(self.model.data_shape),
            "kind": "image" if self.is_image else "table" if self.table is not None else "vector",
            "code_size": self.code_size, "code_shape": list(self.model.code_shape),
            "dimensions": [vars(d) for d in self.dimensions], "slider_range": self.slider_range,
            "label_centres": self.label_centres,
            "labels": self._label_names() if self.items.y is not None or self.conditioned else None,
            "conditioned": self.conditioned, "attributes": self.attributes(),
            "untrained_labels": [names[c] for c in sorted(cfg.untrained_labels) if c < len(names)],
            "colourings": self.colourings(),
            "edit_method": self.edit_method, "edit_methods": list(edits.METHODS),
            "prior": self.prior_kind, "prior_text": self.model.prior_text, "identity": self.identity,
        }

    def _identity(self) -> str:
        """What this server serves, as a short hash: the model's weights, the data and the split. A page compares it
        (every answer carries it) to notice that the server was restarted on another run."""
        digest = hashlib.sha1(json.dumps([self.run, self.model.config.family, self.dataset.name, self.split,
                                          len(self.items), list(self.model.code_shape)]).encode())
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def attributes(self) -> list[str]:
        """What --attr accepts here: the data set's named attributes, then its classes. Left out: the classes of a
        label-conditioned model (its decoder takes the class as given, so a vector cannot change it), classes that
        only repeat a 0/1 attribute (smiles: `smiling` and `not smiling` beside `smile`), and classes without
        training items (no vector to make)."""
        names = sorted(set(self.dataset.attributes_train) & set(self._split_attributes()))
        names += sorted(set(self.table_attributes) - set(names))
        if self.dataset.y_train is not None and self.items.y is not None and not self.conditioned \
                and not self._label_twins():
            # the classes of the training split, whose codes make a class's vector (Olivetti's test people have none)
            trained = set(torch.unique(self.dataset.y_train).tolist())
            if len(trained) > 1:
                names += [name for index, name in enumerate(self._label_names()) if index in trained
                          and name not in names]
        return names

    def _label_twins(self) -> set[str]:
        """The data set's attributes that are the labels themselves (a 0/1 attribute equal to a two-class label on
        both splits), computed once."""
        if not hasattr(self, "_twins"):
            twins = set()
            ys = (self.dataset.y_train, self.items.y)
            if all(y is not None for y in ys) and len(self._label_names()) == 2:
                own = self._split_attributes()
                for name, values in self.dataset.attributes_train.items():
                    split_values = own.get(name)
                    if split_values is None or name in self.table_attributes:
                        continue
                    if all(len(v) == len(y) and torch.equal(v.reshape(-1).double(), y.reshape(-1).double())
                           for v, y in zip((values, split_values), ys)):
                        twins.add(name)
            self._twins = twins
        return self._twins

    def colourings(self) -> list[str]:
        """What the map can be coloured by: the labels, then the split's attributes (less those that are the labels)."""
        return (["label"] if self.items.y is not None else []) + sorted(set(self._split_attributes())
                                                                        - self._label_twins())

    # ---- decode / encode -------------------------------------------------------------------------------------
    def decode(self, z: Sequence[float], label: int | str | None = None) -> dict[str, Any]:
        code = self.check_code(z)
        y = self.parse_label(label)
        with self._lock:
            values = latent.decode_mean(self.model, code[None], y)
        return {**self.render(values)[0], **self._decoded_with(y)}

    def encode_item(self, index: int) -> dict[str, Any]:
        x = self.item_x(index)  # an unknown item is a 404 before anything reads its label
        return {"item": index, "label": self._item_label_name(index), **self._encoded(x, self.item_label(index))}

    def encode_upload(self, data: bytes, label: int | str | None = None) -> dict[str, Any]:
        y = self.parse_label(label)  # before the picture's decoding, the costly part
        notes: list[str] = []
        x = self.read_upload(data, notes)
        notes += filter(None, [self.background_note(x)])
        return {**self._encoded(x, y), **({"note": "; ".join(notes)} if notes else {})}

    def background_note(self, x: torch.Tensor) -> str | None:
        """A note where an uploaded picture's background (its border's mean) is light and the training pictures'
        dark, or the reverse: the model reads it as it is (a digit drawn in black on white, for MNIST's white on
        black, comes back as a blot)."""
        if self._training_border is None:
            train = self.dataset.split("train").x[:BORDER_ITEMS]
            self._training_border = float(_border(train).mean()) if len(train) else math.nan
        own, trained = float(_border(x[None]).mean()), self._training_border
        # only where the training pictures have one background (dark or light, not mixed or grey) and the upload the
        # other
        if not (trained <= 0.5 - BORDER_GAP / 2 or trained >= 0.5 + BORDER_GAP / 2):  # (NaN: no training pictures)
            return None
        if (own > 0.5) == (trained > 0.5) or abs(own - trained) < BORDER_GAP:
            return None
        shade = lambda value: "light" if value > 0.5 else "dark"  # noqa: E731
        return (f"this picture's background is {shade(own)} ({own:.2f}), the training pictures' {shade(trained)} "
                f"({trained:.2f}): the model reads it as it is; invert it to match")

    @torch.no_grad()
    def _encoded(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, Any]:
        """One item's code, its posterior's spread, the item and its reconstruction."""
        with self._lock:
            qz = self.model.encode(x[None].to(self.model.device), y)
            code = self.model.code(qz).detach().cpu().flatten()
            recon = latent.decode_mean(self.model, code.reshape(1, *self.model.code_shape), y)
            spread = _stddev(qz)
        return {"z": code.tolist(), "std": spread, "item_view": self.render(x[None])[0],
                "reconstruction": self.render(recon)[0], **self._decoded_with(y)}

    def item(self, index: int) -> dict[str, Any]:
        x = self.item_x(index)
        out = {"item": index, "label": self._item_label_name(index), **self.render(x[None])[0]}
        attributes = self._split_attributes()
        out["attributes"] = {k: float(v[index]) for k, v in attributes.items()}
        return out

    # ---- paths, edits, samples -------------------------------------------------------------------------------
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, t: float | None = None, steps: int | None = None,
                    method: str = "lerp", label: int | str | None = None) -> dict[str, Any]:
        """Decoded points between codes a and b: at t in [0, 1], or `steps` evenly spaced ones, endpoints included."""
        paths = {"lerp": latent.lerp_at, "slerp": latent.slerp_at}
        if method not in paths:
            raise VaekitError(f"unknown interpolation {method!r}: use lerp or slerp")
        if (t is None) == (steps is None):
            raise VaekitError("give either t (one point, 0..1) or steps (2..64 points)")
        if t is not None and not (math.isfinite(t) and 0 <= t <= 1):
            raise VaekitError(f"t must be between 0 and 1, got {t}")
        if steps is not None and not 2 <= steps <= MAX_STEPS:
            raise VaekitError(f"steps must be between 2 and {MAX_STEPS}, got {steps}")
        y = self.parse_label(label)
        fractions = torch.tensor([t]) if t is not None else torch.linspace(0, 1, steps)
        path = self._finite_code(paths[method](a.flatten(), b.flatten(), fractions))  # (T, D)
        with self._lock:
            values = latent.decode_mean(self.model, path.reshape(len(path), *self.model.code_shape), y)
        frames = self.render(values)
        path = self._finite_code(path)
        out = {"frames": frames, "z": path.tolist()} if t is None else {**frames[0], "z": path[0].tolist()}
        return {**out, **self._decoded_with(y)}

    def _method(self, method: str | None) -> str:
        if method is None:
            return self.edit_method
        if method not in edits.METHODS:
            raise VaekitError(f"unknown method {method!r}: use one of {', '.join(edits.METHODS)}")
        return method

    def edit(self, name: str, method: str | None = None) -> edits.AttributeEdit:
        """The attribute's edit from the training split's codes, made once per (name, method); method None: the
        run's (edit_method)."""
        method = self._method(method)
        key = (name, method)
        with self._cache_lock:
            if key in self._edits:
                return self._edits[key]
        groups = self._groups(name)
        codes = self.split_codes() if self._from_table(name) else self.train_codes()
        with self._compute_lock:
            if key not in self._edits:
                self._edits[key] = edits.attribute_edit(codes, groups, method)
            return self._edits[key]

    def attribute(self, code: torch.Tensor, name: str, strength: float, method: str | None = None,
                  label: int | str | None = None) -> dict[str, Any]:
        if not (math.isfinite(strength) and abs(strength) <= MAX_STRENGTH):
            raise VaekitError(f"strength must be a number between -{MAX_STRENGTH:g} and {MAX_STRENGTH:g}, got {strength}")
        method = self._method(method)
        edit = self.edit(name, method)
        edited = self._finite_code(edit(code.reshape(1, *self.model.code_shape), strength).flatten())
        y = self.parse_label(label)
        both = torch.stack([edited, code.flatten()]).reshape(2, *self.model.code_shape)
        with self._lock:
            values = latent.decode_mean(self.model, both, y)
        rendered = self.render(values)
        # the unedited code decoded alike (strength 0): what the edit changes, apart from the reconstruction's error
        return {**rendered[0], "reconstruction": rendered[1], "z": self._finite_code(edited).tolist(),
                "attribute": name, "method": method, "strength": strength, "score": self.score(name, method),
                **self._decoded_with(y)}

    def score(self, name: str, method: str | None = None) -> dict[str, Any]:
        """The edit's measured score (vaekit.edits.score_attribute on the test split), computed once in the
        background: {"status": "computing"}, then {"status": "ready", ...} or {"status": "unavailable", "reason"}."""
        method = self._method(method)
        self._groups(name)  # an unknown attribute is a 404 now, not a failed job later
        key = (name, method)
        with self._score_wake:
            if self._closed:
                return {"status": "unavailable", "reason": "the explorer is stopping"}
            job = self._scores.get(key)
            if job is None:
                job = self._scores[key] = Future()
            if not job.running() and not job.done():  # the latest asked for goes first
                self._score_queue = [(k, j) for k, j in self._score_queue if k != key] + [(key, job)]
                self._score_wake.notify()
        if not job.done():
            return {"status": "computing"}
        if job.cancelled():
            return {"status": "unavailable", "reason": "the explorer is stopping"}
        error = job.exception()
        if error is not None:
            reason = str(error) if isinstance(error, VaekitError) else f"{type(error).__name__}: {error}"
            return {"status": "unavailable", "reason": reason}
        return job.result()

    def _score_worker(self) -> None:
        while True:
            with self._score_wake:
                while not self._score_queue and not self._closed:
                    self._score_wake.wait()
                if self._closed:
                    return
                (name, method), job = self._score_queue.pop()
                if not job.set_running_or_notify_cancel():
                    continue
            try:
                job.set_result(self._score(name, method))
            except Exception as exc:  # noqa: BLE001  (reported as the score's reason, never a failed request)
                job.set_exception(exc)

    def _score(self, name: str, method: str) -> dict[str, Any]:
        if self._from_table(name):
            raise VaekitError(f"{name} comes from an attribute table of the {self.split} split only: a score needs the "
                              "attribute on both splits (the direction and judge from training items, the edits on "
                              "test items)")
        score = edits.score_attribute(self.model, self.dataset, name, SCORE_STRENGTHS, method=method,
                                      items=self.score_items, train_codes=self.train_codes())
        return _json_safe({"status": "ready", "summary": score.summary(), **score.to_dict()})

    @torch.no_grad()
    def sample(self, n: int = 16, seed: int | None = None, label: int | str | None = None) -> dict[str, Any]:
        if not 1 <= n <= MAX_SAMPLES:
            raise VaekitError(f"n must be between 1 and {MAX_SAMPLES}, got {n}")
        if seed is not None and not 0 <= seed < 2**63:
            raise VaekitError(f"seed must be between 0 and 2**63 - 1, got {seed}")
        y = self.parse_label(label)
        generator = torch.Generator()
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        with self._lock:
            z = self.model.draw_code(draw_prior(self.model, n, generator, y))
            values = self.model.decode_code(z.to(self.model.device), y).mean.cpu()
        out: dict[str, Any] = {"samples": self.render(values), **self._decoded_with(y)}
        if tuple(z.shape[1:]) == tuple(self.model.code_shape):  # the prior draws codes: the page can slide them
            out["z"] = z.flatten(1).tolist()
        return out

    # ---- the 2-D map -----------------------------------------------------------------------------------------
    def map_points(self, colour: str | None = None) -> dict[str, Any]:
        values, names = None, None
        if colour in (None, "label"):
            if self.items.y is not None:
                values = self.items.y[: len(self.map.points)].tolist()
                names = self._label_names()
            elif colour == "label":
                raise NotFound(f"{self.dataset.name} has no labels to colour by: choose an attribute")
        else:
            attributes = self._split_attributes()
            if colour not in attributes:
                known = (["label"] if self.items.y is not None else []) + sorted(attributes)
                raise NotFound(f"no attribute {colour!r} to colour by: choose one of {', '.join(known) or 'none'}")
            values = attributes[colour][: len(self.map.points)].double().tolist()
        return {"points": np.round(self.map.points, 4).tolist(), "projection": self.map.projection,
                "explained_variance": list(self.map.explained_variance), "colour": colour or ("label" if names else None),
                "values": values, "names": names}

    def map_decode(self, point: Sequence[float], label: int | str | None = None) -> dict[str, Any]:
        if len(point) != 2:
            raise VaekitError(f"point must be two numbers (the map's x and y), got {len(point)}")
        point = _finite(point, "point")
        code = self._finite_code(torch.from_numpy(self.map.to_codes(np.asarray(point)[None])).float()[0])
        return {**self.decode(code.tolist(), label), "z": code.tolist()}

    # ---- checks and conversions ------------------------------------------------------------------------------
    def check_code(self, z: Sequence[float]) -> torch.Tensor:
        if len(z) != self.code_size:
            raise VaekitError(f"z has {len(z)} numbers, this model's code has {self.code_size}")
        values = _finite(z, "z")
        return torch.tensor(values, dtype=torch.float32).reshape(self.model.code_shape)

    @staticmethod
    def _finite_code(code: torch.Tensor) -> torch.Tensor:
        """A code computed from the request's (an edit, a point of a path) must be usable too."""
        if not torch.isfinite(code).all() or code.abs().max() > MAX_CODE_VALUE:
            raise VaekitError(f"the resulting code has values beyond +-{MAX_CODE_VALUE:g}: use smaller numbers")
        return code

    def parse_label(self, label: int | str | None) -> torch.Tensor | None:
        """The class a label-conditioned model decodes with; other models take none. A number is a class index; text
        is a class name, or an index written in digits where no class has that name (classes named "1", "2", ...
        are found by name from text, by index from a number)."""
        if not self.conditioned:
            if label is not None:
                raise VaekitError("this model is not conditioned on labels: leave out label")
            return None
        if label is None:
            raise VaekitError(f"this model is conditioned on labels: give label, one of {', '.join(self._label_names())}")
        names = self._label_names()
        if isinstance(label, int) and not isinstance(label, bool):
            if 0 <= label < self.model.num_labels:
                return torch.tensor([label])
            raise NotFound(f"no class {label}: class indices are 0..{self.model.num_labels - 1} "
                           f"({', '.join(names)})")
        text = str(label)
        if text in names:
            return torch.tensor([names.index(text)])
        if re.fullmatch(r"[0-9]{1,9}", text) and int(text) < self.model.num_labels:
            return torch.tensor([int(text)])
        raise NotFound(f"unknown label {text!r}: use one of {', '.join(names)}")

    def item_x(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self.items):
            raise NotFound(f"no item {index}: the {self.split} split has items 0..{len(self.items) - 1}")
        return self.items.x[index]

    def item_label(self, index: int) -> torch.Tensor | None:
        return self._labels(self.items.y)[index:index + 1] if self.conditioned else None

    def code_of(self, item: int | None, z: Sequence[float] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """An endpoint of a path or an edit: an item of the split (its code, and its label where the model is
        conditioned) or a code given as numbers. Exactly one of the two."""
        if (item is None) == (z is None):
            raise VaekitError("give either item (an index into the split) or z (a code)")
        if z is not None:
            return self.check_code(z).flatten(), None
        x = self.item_x(item)
        y = self.item_label(item)
        with self._lock:
            code = latent.encode_dataset(self.model, x[None], y=y)[0]
        return code.flatten(), y

    def read_upload(self, data: bytes, notes: list[str] | None = None) -> torch.Tensor:
        """An uploaded picture as one item of the model's shape: its channels (grey or RGB; transparency over
        white, as a browser shows it; 16-bit and float pictures scaled, not clipped), cropped to the model's aspect
        ratio about the centre and resized; values in [0, 1]."""
        if not self.is_image:
            raise BadUpload("this model's items are not pictures: upload is for image models", 415)
        if len(data) > MAX_UPLOAD_BYTES:
            raise BadUpload(f"the upload is {len(data):,} bytes; the limit is {MAX_UPLOAD_BYTES:,} "
                            f"({MAX_UPLOAD_BYTES // 2**20} MB): send a smaller picture", 413)
        with self._upload_lock:
            return pictures.read_picture(data, self.model.data_shape, notes=notes)

    def render(self, values: torch.Tensor) -> list[dict[str, Any]]:
        """Decoded items (N, *data_shape) -> what the page shows: a PNG (as a data URL), a table row in the user's
        units, or the numbers."""
        if self.is_image:
            return [{"image": _png(tile)} for tile in viz.to_uint8_images(values)]
        flat = values.reshape(len(values), -1)
        if self.table is not None:
            columns = self.table.decode(flat)
            return [{"row": {name: columns[name][i] for name in self.table.names}} for i in range(len(flat))]
        return [{"values": [round(float(v), 6) for v in row]} for row in flat]

    def train_codes(self) -> torch.Tensor:
        """The training split's codes (for attribute vectors), computed once."""
        with self._compute_lock:
            if self._train_codes is None:
                train = self.dataset.split("train")
                self._train_codes = self._codes_in_turns(train.x, self._labels(train.y) if self.conditioned else None)
            return self._train_codes

    def split_codes(self) -> torch.Tensor:
        """The served split's codes (for an attribute table's vectors), computed once."""
        with self._compute_lock:
            if self._split_codes is None:
                self._split_codes = self._codes_in_turns(
                    self.items.x, self._labels(self.items.y) if self.conditioned else None)
            return self._split_codes

    def _codes_in_turns(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Items' codes, CODE_BATCH at a time, each batch one turn of the model lock: the requests that decode (a
        dragged slider) wait for one batch at most, not for a whole split."""
        codes = []
        for start in range(0, len(x), CODE_BATCH):
            with self._lock:
                codes.append(latent.encode_dataset(self.model, x[start:start + CODE_BATCH],
                                                   y=None if y is None else y[start:start + CODE_BATCH]))
            if self._lock.waiting:  # a turn for a waiting request: a lock taken back at once is not one (Python's
                time.sleep(0.001)  # locks are not fair: a decode waited out the whole split), a millisecond is
        return torch.cat(codes)

    def close(self) -> None:
        with self._score_wake:
            self._closed = True
            for _, job in self._score_queue:
                job.cancel()
            self._score_queue.clear()
            self._score_wake.notify_all()

    def _groups(self, name: str):
        if name not in self.attributes():
            known = (f"choose one of {', '.join(self.attributes())}" if self.attributes()
                     else "this run's data has no attributes to edit by")
            if name in self._label_names() and name not in self._split_attributes():
                why = (f"{name!r} is a class of the label this model is conditioned on: its decoder takes the class as "
                       "given, so a vector cannot change it (decode with another label instead)" if self.conditioned
                       else f"{name!r} is a class that repeats the attribute {', '.join(sorted(self._label_twins()))}")
                raise NotFound(f"{why}: {known}")
            raise NotFound(f"no attribute {name!r} here: {known}")
        if self._from_table(name):
            return latent.groups_from_values(self.table_attributes[name], name)
        return latent.find_attribute(self.dataset, "train", name)

    def _from_table(self, name: str) -> bool:
        """A table column wins over a data set attribute or class of the same name, as in `vaekit attribute`."""
        return name in self.table_attributes

    def _split_attributes(self) -> dict[str, torch.Tensor]:
        own = self.dataset.attributes_train if self.split == "train" else self.dataset.attributes_test
        return {**own, **self.table_attributes}

    def _labels(self, y: torch.Tensor | None) -> torch.Tensor:
        if y is None:
            raise VaekitError(f"the model is conditioned on labels, but {self.dataset.name} has none: give labelled data")
        return y

    def _label_names(self) -> list[str]:
        if self.model.num_labels and self.model.config.label_names:  # the classes the model decodes with, by name
            return list(self.model.config.label_names)
        if self.dataset.label_names:
            return list(self.dataset.label_names)
        count = self.model.num_labels or (int(self.dataset.y_train.max()) + 1 if self.dataset.y_train is not None else 0)
        return [str(i) for i in range(count)]

    def _decoded_with(self, y: torch.Tensor | None) -> dict[str, Any]:
        """{"decoded_with": the class name} for a label-conditioned model's decodes, so a page can say which."""
        if y is None:
            return {}
        names = self._label_names()
        k = int(y.reshape(-1)[0])
        return {"decoded_with": names[k] if k < len(names) else str(k)}

    def _item_label_name(self, index: int) -> str | None:
        if self.items.y is None:
            return None
        label = int(self.items.y[index])
        names = self._label_names()
        return names[label] if label < len(names) else str(label)


def _border(x: torch.Tensor) -> torch.Tensor:
    """The outermost pixels of pictures (N, C, H, W), all channels: (N, C * perimeter) values."""
    return torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1).flatten(1)


class _TurnLock:
    """A lock that knows how many threads wait for it (the encoding in turns gives them their turn)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self.waiting = 0

    def __enter__(self) -> "_TurnLock":
        with self._count:
            self.waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count:
                self.waiting -= 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def _prior_kind(model: Model) -> str:
    """What the model's prior is, for the page's prior controls: "prior" (trained towards it: a VAE's), "learned" (a
    second stage, as a VQ-VAE's over its codebook's entries), "untrained" (that stage not trained: sampling is
    refused) or "nominal" (an AE's N(0, I), which its codes were never trained towards)."""
    if model.codes_follow_prior:
        return "prior"
    try:
        model.prior()
    except VaekitError:
        return "untrained"
    return "learned" if model.stages else "nominal"


def _finite(values: Sequence[float], what: str) -> list[float]:
    """Numbers a code can hold: finite as float32, and within +-MAX_CODE_VALUE."""
    out = [float(v) for v in values]
    for i, v in enumerate(out):
        if not math.isfinite(v):
            raise VaekitError(f"{what} holds a value that is not a finite number at position {i}: send finite numbers")
        if abs(v) > MAX_CODE_VALUE:
            raise VaekitError(f"{what} holds {v:g} at position {i}, beyond +-{MAX_CODE_VALUE:g}: send smaller numbers")
    return out


def _json_safe(value: Any) -> Any:
    """NaN and infinities (a measurement of an empty picture) as null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _stddev(qz) -> list[float] | None:
    try:
        return qz.stddev.detach().cpu().flatten().tolist()
    except (AttributeError, NotImplementedError):  # a family whose posterior has no standard deviation (a point)
        return None


def _png(tile: np.ndarray) -> str:
    from PIL import Image

    image = Image.fromarray(tile[..., 0] if tile.shape[-1] == 1 else tile)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
