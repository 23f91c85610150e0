"""One picture of the user's (an upload to the explorer, a file given to a command) as one item of an image model:
its channels (grey or RGB; transparency over white, as a viewer shows it; 16-bit and float pictures scaled, not
clipped), turned as its EXIF says, cropped to the model's aspect ratio about the centre and resized; values in
[0, 1]. Its size is checked from its header before its pixels are decoded."""
from __future__ import annotations

import io
import logging
from typing import Sequence

import numpy as np
import torch

from ..errors import VaekitError
from .user import upright

MAX_PIXELS = 40_000_000  # width x height: refuses a decompression bomb before its pixels are read
# MPO: a JPEG carrying a second image (phones' depth maps and gain maps); its first image is read
FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "WEBP", "TIFF")
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

log = logging.getLogger(__name__)


class BadPicture(VaekitError):
    """A picture of the wrong kind or size (an upload's HTTP status: 415 or 413)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def read_picture(data: bytes, data_shape: Sequence[int], path: str | None = None, verb: str = "send",
                 notes: list[str] | None = None) -> torch.Tensor:
    """The picture in `data` as one item of shape data_shape (C, H, W). Messages name its file (`path`), or call it
    the picture (the upload, where it may not be one), and tell the user to `verb` another. What is worth knowing
    of how it was read (the first frame of several) is appended to `notes`, or logged where none is given."""
    from PIL import Image, ImageOps

    name, source = (path, path) if path else ("the picture", "the upload")
    formats = ", ".join(f for f in FORMATS if f != "MPO")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours: refused from the header alone
        raise BadPicture(f"{name} has too many pixels; the limit is {MAX_PIXELS:,}: {verb} a smaller one",
                         413) from None
    except Exception:  # noqa: BLE001  (Pillow raises many kinds for damaged files; each is a bad picture)
        raise BadPicture(f"{source} is not a picture: {verb} one of {formats}", 415) from None
    if image.format not in FORMATS:
        raise BadPicture(f"{image.format} pictures are not accepted{f' ({path})' if path else ''}: {verb} one of "
                         f"{formats}", 415)
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise BadPicture(f"{name} is {width}x{height} pixels; the limit is {MAX_PIXELS:,}: {verb} a smaller one",
                         413)
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format != "MPO":  # (an MPO's second image is a phone's depth or gain map, not a frame)
        note = f"{name} has {frames} frames (an animation or a multi-page file): its first is read"
        if notes is not None:
            notes.append(note)
        else:
            log.warning("%s", note)
    channels, h, w = data_shape
    try:
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB" if channels == 3 else "L", (w, h))  # decode at a reduced scale where it can
        image = upright(image)
        if image.mode in HIGH_DEPTH_MODES:
            # 16-bit, 32-bit and float pictures: each channel cropped and resized in floating point (mode F)
            array = _unit_array(image, channels)  # (H, W, C) in [0, 1]
            planes = [np.asarray(ImageOps.fit(Image.fromarray(np.ascontiguousarray(array[..., c], dtype=np.float32),
                                                              "F"), (w, h), Image.Resampling.LANCZOS))
                      for c in range(channels)]
            out = np.stack(planes)
        else:  # 8-bit: over white where transparent, then cropped and resized in its own mode (fast, small)
            image = ImageOps.fit(_over_white(image).convert("RGB" if channels == 3 else "L"), (w, h),
                                 Image.Resampling.LANCZOS)
            out = np.asarray(image, dtype=np.float32) / 255.0
            out = out[None] if channels == 1 else out.transpose(2, 0, 1)
    except MemoryError:
        raise BadPicture(f"{name} is too large to decode here: {verb} a smaller one", 413) from None
    except Exception as exc:  # noqa: BLE001
        raise BadPicture(f"{name} could not be read ({type(exc).__name__}): {verb} another", 415) from None
    return torch.from_numpy(np.ascontiguousarray(np.clip(out, 0, 1), dtype=np.float32))


def _over_white(image):
    """A picture with transparency (an alpha channel, or a transparent colour) over white, as a viewer shows it."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        image = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    return image


def _unit_array(image, channels: int) -> np.ndarray:
    """A 16-bit, 32-bit or float grey picture -> (H, W, channels) float in [0, 1]."""
    values = np.asarray(image)
    if image.mode == "F":  # float, as a TIFF may hold: taken as 0..1
        array = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    else:  # 16-bit (PNG stores it, and Pillow may read it, as mode I): over 65535, unless it holds larger values
        array = values.astype(np.float32) / (65535.0 if values.max(initial=0) <= 65535 else 2.0**32 - 1)
    array = np.clip(array, 0.0, 1.0)[..., None]
    return np.repeat(array, 3, axis=-1) if channels == 3 else array
