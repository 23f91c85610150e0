"""Real face sets (SMILEsmileD smiles, Olivetti with glasses, Frey faces) from checksummed .npz files on disk."""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import secrets
import urllib.request
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import DataConfig
from ..errors import VaekitError
from ..progress import bar_timing
from . import Dataset, register_dataset, safe
from .builtin import images_to_tensor
from .idx_datasets import cache_dir, search_dirs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceSpec:
    """One face set: the folder and file it lives in (FOLDER/FOLDER.npz), the sha256 of each array's C-order bytes,
    and where it comes from and on what terms (none of them has an open licence: never shipped with vaekit)."""

    name: str
    folder: str
    arrays: dict[str, str]  # array name -> sha256
    shape: tuple[int, int]
    source: str
    terms: str
    url: str = ""  # the public file `vaekit data get` downloads and converts
    url_sha256: str | None = None  # its checksum where one is published


SPECS: dict[str, FaceSpec] = {
    "smiles": FaceSpec(
        name="smiles", folder="smilesmiled", shape=(64, 64),
        arrays={
            "images": "0c62e0d4f29331a712c9e0bfdb42fa73cefa28b5197bb3bcabeb1b5109ca875b",
            "smile": "309ec5ecc8ae8c23dfb9c4bf3e0f629e3c7dffa640c1dd777a6302dc91f082d4",
            "file_id": "16468a77fd36d12503ab5f46db681fbfefdadb28c44f27190667b849f9bfb4e4",
            "split": "8b4840be3dff78107bd2f934fd5826a190e4f9220a8d716780df3c1c6f5fe649",
        },
        source="SMILEsmileD, D. D. Hromada, github.com/hromi/SMILEsmileD (crops of LFW news photographs)",
        terms="no licence stated: research and demonstration use; cite SMILEsmileD and LFW",
        url="https://github.com/hromi/SMILEsmileD/archive/6afac66f50061948eed7da5a351cecd9c4a99fe3.zip",
    ),
    "olivetti": FaceSpec(
        name="olivetti", folder="olivetti", shape=(64, 64),
        arrays={
            "images": "a3f75007cc103363b61a63e06bec8ea4846407682ef6e7c9ae1eb9c1bd0e8a00",
            "person": "2be463dfffb2fd54a24b159096fcda94b081231af18675570e89f8482dd2ea8d",
            "glasses": "7a5c005e46268140822ab9a49021ed3efa9d25b2ae315bcaaed6016f9efb0f54",
        },
        source="the Olivetti / ORL faces, AT&T Laboratories Cambridge (F. Samaria and A. Harter, 1994)",
        terms="give credit to AT&T Laboratories Cambridge when using these images; no other terms stated",
        url="https://ndownloader.figshare.com/files/5976027",  # olivettifaces.mat, as scikit-learn fetches it
        url_sha256="b612fb967f2dc77c9c62d3e1266e0c73d5fca46a4b8906c18e454d41af987794",
    ),
    "frey": FaceSpec(
        name="frey", folder="frey", shape=(28, 20),
        arrays={"images": "2438ba4f0d2a6bd8bac43de756141eaa33c8d248dd613d464bdb1210d9b7af78"},
        source="Frey faces, Brendan Frey, from Sam Roweis's data page (frey_rawface.mat)",
        terms="no licence stated: cite B. Frey and S. Roweis's data page, as the VAE literature does",
        url="https://cs.nyu.edu/~roweis/data/frey_rawface.mat",
    ),
}

# 8 of the 40 people (80 images; 30 with glasses, among them two people who take them off): no one in both splits
OLIVETTI_TEST_PEOPLE = (3, 5, 9, 18, 22, 27, 31, 38)
FREY_TEST = 200  # frames, from a fixed permutation


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def locate(spec: FaceSpec, data_dir: str | None = None) -> Path | None:
    """The first FOLDER.npz in the search path (--data-dir, $VAEKIT_DATA, ~/.cache/vaekit, /usr/share/datasets)."""
    for directory in search_dirs(spec.folder, data_dir):
        if (directory / f"{spec.folder}.npz").is_file():
            return directory / f"{spec.folder}.npz"
    return None


def read_arrays(spec: FaceSpec, data_dir: str | None = None) -> dict[str, np.ndarray]:
    """The arrays, each checked against its sha256."""
    path = locate(spec, data_dir)
    if path is None:
        looked = "; ".join(str(d) for d in search_dirs(spec.folder, data_dir))
        raise VaekitError(f"{spec.name}: {spec.folder}.npz not found in: {looked}; get it with `vaekit data get "
                          f"{spec.name}`, or point --data-dir or $VAEKIT_DATA at the folder that holds {spec.folder}/")
    arrays = safe.load_npz(path)
    for name, expected in spec.arrays.items():
        if name not in arrays:
            raise VaekitError(f"{path} has no array {name!r}: it is not the {spec.name} set; delete it and run "
                              f"`vaekit data get {spec.name}`")
        if array_sha256(arrays[name]) != expected:
            raise VaekitError(f"{path}: array {name!r} does not match its checksum: the file is damaged or another "
                              f"version; delete it and run `vaekit data get {spec.name}`")
    _show_terms(spec)
    return arrays


def _show_terms(spec: FaceSpec) -> None:
    """Source and terms, said the first time a set is used on this machine (a marker in vaekit's cache), and at
    debug level afterwards."""
    marker = cache_dir(spec.folder) / ".terms-shown"
    if marker.exists():
        log.debug("%s: %s; %s", spec.name, spec.source, spec.terms)
        return
    log.warning("%s: %s; %s", spec.name, spec.source, spec.terms)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # shown again next time: better than never


def _split(name: str, x: torch.Tensor, test: torch.Tensor, y: torch.Tensor, label_names: tuple[str, ...],
           attributes: dict[str, torch.Tensor]) -> Dataset:
    """The test items as filed; the training items in a fixed shuffled order (the files are sorted by smile or by
    person), so that --limit keeps a mix."""
    train = torch.nonzero(~test).flatten()
    train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))]
    return Dataset(name, x[train], x[test], y[train], y[test], label_names=label_names,
                   attributes_train={k: v[train] for k, v in attributes.items()},
                   attributes_test={k: v[test] for k, v in attributes.items()}, is_image=True)


@register_dataset("smiles", "SMILEsmileD: 7,370 grey 64x64 face crops, half smiling (6,634 train / 736 test); "
                            "attribute smile (`vaekit data get smiles`)")
def load_smiles(cfg: DataConfig) -> Dataset:
    arrays = read_arrays(SPECS["smiles"], cfg.data_dir)
    x = images_to_tensor(arrays["images"])
    smile = torch.from_numpy(arrays["smile"].astype(np.int64))
    test = torch.from_numpy(arrays["split"] == 1)  # as filed, its first 368 faces smile
    return _split("smiles", x, test, smile, ("not smiling", "smiling"), {"smile": smile.float()})


@register_dataset("olivetti", "Olivetti faces: 400 grey 64x64 images of 40 people (32 people train / 8 test); "
                              "labels: person; attribute glasses (`vaekit data get olivetti`)")
def load_olivetti(cfg: DataConfig) -> Dataset:
    arrays = read_arrays(SPECS["olivetti"], cfg.data_dir)
    x = images_to_tensor(arrays["images"])
    person = torch.from_numpy(arrays["person"].astype(np.int64))
    glasses = torch.from_numpy(arrays["glasses"].astype(np.float32))
    test = torch.isin(person, torch.tensor(OLIVETTI_TEST_PEOPLE))
    return _split("olivetti", x, test, person, tuple(f"person {i}" for i in range(40)), {"glasses": glasses})


@register_dataset("frey", "Frey faces: 1,965 grey 28x20 frames of one face (1,765 train / 200 test), the face set "
                          "of the VAE paper (`vaekit data get frey`)")
def load_frey(cfg: DataConfig) -> Dataset:
    arrays = read_arrays(SPECS["frey"], cfg.data_dir)
    x = images_to_tensor(arrays["images"])
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))  # the same on every machine
    return Dataset("frey", x[order[FREY_TEST:]], x[order[:FREY_TEST]], is_image=True)


# ---- vaekit data get: download the public file, convert it to the same arrays, check them -----------------

DOWNLOAD_TIMEOUT = 60.0  # seconds without data before a download gives up
MAX_DOWNLOAD = 512 * 2**20  # bytes: more than any face set's public file (a server sending without end fills no disk)
NUMERIC_MATLAB = ("double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                  "logical")  # the classes whose size a MATLAB file's headers tell (whosmat)
MAX_PICTURE = 2**20  # bytes of one SMILEsmileD picture in its archive (64x64 JPEGs of a few kB)
# Index ranges of the images of people wearing glasses, as published by Garreta & Moncecchi (2013)
OLIVETTI_GLASSES = ((10, 19), (30, 32), (37, 38), (50, 59), (63, 64), (69, 69), (120, 121), (124, 129), (130, 139),
                    (160, 161), (164, 169), (180, 182), (185, 185), (189, 189), (190, 192), (194, 194), (196, 199),
                    (260, 269), (270, 279), (300, 309), (330, 339), (358, 359), (360, 369))
SMILES_CONFLICTS = (5, 29, 2422, 3308, 10249)  # in both folders of the source: dropped


def _wanted(expected: str, variable: str) -> str:
    """What to do when --from was given another file than the source's."""
    return (f"the file wanted is the source's {expected} (variable {variable!r}): download it again (vaekit data get, "
            "without --from), or give that file with --from")


def _matlab(path: Path, variable: str, expected: str) -> np.ndarray:
    """One variable of a MATLAB file (the source's `expected` file), its size read from the file's headers and
    checked against memory first."""
    from scipy.io import loadmat, whosmat  # scipy comes with scikit-learn

    fix = _wanted(expected, variable)

    try:
        found = {name: (shape, kind) for name, shape, kind in whosmat(str(path))}
        if variable in found and found[variable][1] not in NUMERIC_MATLAB:  # (a cell's or a struct's size is not
            raise VaekitError(f"{path}'s {variable!r} is a MATLAB {found[variable][1]}, not an array of numbers: "
                              f"{fix}")  # (told by the headers)
        if variable in found:
            shape = found[variable][0]
            safe.check_memory(math.prod(shape) * 8, f"{path}'s {variable!r} (shape {shape})", fix)
            content = loadmat(str(path), variable_names=[variable])
    except VaekitError:
        raise
    except Exception as exc:  # scipy raises many types for a file that is not MATLAB's
        raise VaekitError(f"{path} is not a readable MATLAB file ({exc.__class__.__name__}): {fix}") from None
    if variable not in found or variable not in content:
        raise VaekitError(f"{path} has no variable {variable!r}: {fix}")
    return np.asarray(content[variable])


def convert_frey(path: Path) -> dict[str, np.ndarray]:
    """frey_rawface.mat: 'ff' (560, 1965) uint8, one frame per column."""
    ff = _matlab(path, "ff", "frey_rawface.mat")
    if ff.shape[0] != 28 * 20:
        raise VaekitError(f"{path}: 'ff' has shape {ff.shape}, expected (560, frames): "
                          f"{_wanted('frey_rawface.mat', 'ff')}")
    return {"images": np.ascontiguousarray(ff.T.reshape(-1, 28, 20).astype(np.uint8))}


def convert_olivetti(path: Path) -> dict[str, np.ndarray]:
    """olivettifaces.mat: 'faces' (4096, 400), one 64x64 image per column, stored column-major."""
    faces = _matlab(path, "faces", "olivettifaces.mat")
    if faces.shape != (4096, 400):
        raise VaekitError(f"{path}: 'faces' has shape {faces.shape}, expected (4096, 400): "
                          f"{_wanted('olivettifaces.mat', 'faces')}")
    images = np.ascontiguousarray(faces.T.reshape(400, 64, 64).transpose(0, 2, 1).astype(np.uint8))
    glasses = np.zeros(400, dtype=np.uint8)
    for first, last in OLIVETTI_GLASSES:
        glasses[first:last + 1] = 1
    return {"images": images, "person": (np.arange(400) // 10).astype(np.uint8), "glasses": glasses}


def convert_smiles(path: Path) -> dict[str, np.ndarray]:
    """The SMILEsmileD repository archive: SMILEs/positives/positives7/N.jpg and SMILEs/negatives/negatives7/N.jpg,
    the images vaekit's selection names (smiling first, each in file-number order), decoded to grey uint8."""
    from PIL import Image

    with resources.files("vaekit").joinpath("_data/smiles_selection.npz").open("rb") as handle:
        selection = dict(np.load(handle))
    folders = {1: "positives/positives7", 0: "negatives/negatives7"}
    pattern = re.compile(r"(?:^|/)SMILEs/(positives/positives7|negatives/negatives7)/(\d+)\.jpg$")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {}
            for name in archive.namelist():
                match = pattern.search(name)
                if match:
                    members[(match.group(1), int(match.group(2)))] = name
            images = np.empty((len(selection["file_id"]), 64, 64), dtype=np.uint8)
            for i, (file_id, smile) in enumerate(zip(selection["file_id"].tolist(), selection["smile"].tolist())):
                key = (folders[smile], file_id)
                if key not in members:
                    raise VaekitError(f"{path} has no SMILEs/{key[0]}/{file_id}.jpg: it is not the SMILEsmileD "
                                      "archive vaekit's selection was made from")
                if archive.getinfo(members[key]).file_size > MAX_PICTURE:  # (zipfile reads no more than it says)
                    raise VaekitError(f"{members[key]} in {path} is over {MAX_PICTURE / 2**20:g} MiB, not a 64x64 "
                                      "JPEG: it is not the SMILEsmileD archive; download it again")
                try:
                    with Image.open(io.BytesIO(archive.read(members[key]))) as image:
                        if image.size != (64, 64):  # said before a picture of any size is decoded
                            raise VaekitError(f"{members[key]} in {path} is {image.size[0]}x{image.size[1]}, not "
                                              "64x64")
                        images[i] = np.asarray(image.convert("L"))
                except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                    raise VaekitError(f"{members[key]} in {path} is not a readable JPEG ({exc.__class__.__name__}): "
                                      "download the archive again") from None
    except VaekitError:
        raise
    except (zipfile.BadZipFile, OSError, *safe.DAMAGED) as exc:
        raise VaekitError(f"{path} is not a readable zip archive ({exc.__class__.__name__}: {str(exc)[:80]}): download "
                          "it again") from None
    return {"images": images, "smile": selection["smile"].astype(np.uint8),
            "file_id": selection["file_id"].astype(np.int32), "split": selection["split"].astype(np.uint8)}


CONVERTERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    "smiles": convert_smiles, "olivetti": convert_olivetti, "frey": convert_frey}


def _download(url: str, target: Path) -> None:
    log.info("downloading %s", url)
    try:
        out = open(target, "wb")
    except OSError as exc:
        raise VaekitError(f"cannot write {target} ({exc.strerror}): choose another place with --dest") from None
    with out:
        try:
            response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise VaekitError(f"cannot download {url} ({reason}): check the connection, or download it by hand and "
                              "give it with --from FILE") from None
        total = int(response.headers.get("Content-Length") or 0) or None
        with response, tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1][:30],
                            leave=False, **bar_timing()) as bar:
            received = 0
            while True:
                try:
                    block = response.read(1 << 20)
                except OSError as exc:
                    raise VaekitError(f"the download of {url} broke off ({exc}): try again, or download it by hand "
                                      "and give it with --from FILE") from None
                if not block:
                    break
                bar.update(len(block))
                received += len(block)  # (not the bar's count: TQDM_DISABLE leaves that at 0)
                if received > MAX_DOWNLOAD:
                    raise VaekitError(f"{url} sent over {MAX_DOWNLOAD / 2**20:g} MiB, more than the file holds: try "
                                      "again later, or download it by hand and give it with --from FILE")
                try:
                    out.write(block)
                except OSError as exc:
                    raise VaekitError(f"cannot write {target} ({exc.strerror}): free some space or choose another "
                                      "place with --dest") from None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_faces(name: str, dest: str | Path | None = None, source: str | Path | None = None) -> Path:
    """Download `name`'s public file (or read `source`, a copy of it), convert it to vaekit's arrays, check each
    array's sha256, and write FOLDER.npz into dest (default ~/.cache/vaekit/FOLDER/). Returns the .npz path."""
    spec = SPECS[name]
    dest = Path(dest).expanduser() if dest is not None else cache_dir(spec.folder)
    created = not dest.exists()  # removed again if nothing lands in it
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaekitError(f"cannot create {dest}: {exc.strerror}; choose another place with --dest") from None
    target = dest / f"{spec.folder}.npz"
    work = dest / f".{spec.folder}.{os.getpid()}-{secrets.token_hex(4)}"
    try:
        if source is None:
            raw = Path(f"{work}.download")
            _download(spec.url, raw)
            if spec.url_sha256 is not None and _file_sha256(raw) != spec.url_sha256:
                raise VaekitError(f"the file downloaded from {spec.url} does not match its published sha256: try "
                                  "again later, or download it by hand and give it with --from FILE")
        else:
            raw = Path(source).expanduser()
            if not raw.is_file():
                raise VaekitError(f"--from {raw}: file not found")
            if raw.suffix.lower() == ".npz":  # vaekit's own converted file, most likely: nothing to convert
                raise VaekitError(f"{raw} is an .npz, not the file --from converts: a converted NAME.npz is used as "
                                  "it is from DIR/NAME/NAME.npz (--data-dir DIR, or VAEKIT_DATA=DIR)")
        arrays = CONVERTERS[name](raw)
        for array, expected in spec.arrays.items():
            if array_sha256(arrays[array]) != expected:
                raise VaekitError(f"{name}: the converted array {array!r} does not match its published sha256 (a "
                                  "different file, or an image decoder that decodes differently): nothing was written")
        part = Path(f"{work}.npz")
        try:
            np.savez_compressed(part, **arrays)
            os.replace(part, target)
        except OSError as exc:
            raise VaekitError(f"cannot write {target} ({exc.strerror or exc}): free some space or choose another "
                              "place with --dest") from None
    finally:
        for leftover in dest.glob(f"{work.name}*"):
            leftover.unlink(missing_ok=True)
        if created and not target.exists():
            try:
                dest.rmdir()  # only if empty: a failed fetch leaves no folder it made
            except OSError:
                pass
    _show_terms(spec)
    return target
