"""Pictures of results: image grids and captioned panels, written as PNG."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import VaekitError
from .files import atomic_write

MIN_CELL = 56  # small images (8x8 digits) are enlarged, nearest-neighbour, to at least this many pixels


def to_uint8_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8; clips what a Gaussian decoder overshoots."""
    array = images.detach().cpu().float().numpy() if torch.is_tensor(images) else np.asarray(images, dtype=np.float32)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise VaekitError(
            f"cannot draw data of shape {tuple(array.shape[1:])} as images (need 1 or 3 channels): write .npy instead"
        )
    return (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def _zoom(h: int, w: int) -> int:
    """How many times small images are enlarged (nearest-neighbour) so that a cell is at least MIN_CELL pixels."""
    return max(1, math.ceil(MIN_CELL / max(h, w))) if max(h, w) < MIN_CELL else 1


def image_grid(images: torch.Tensor | np.ndarray, ncol: int | None = None, pad: int = 2) -> Image.Image:
    """Tile images row-major into one picture, ncol per row (default: about square)."""
    tiles = to_uint8_images(images)
    n, h, w, c = tiles.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    zoom = _zoom(h, w)
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = tiles[i]
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    if zoom > 1:
        picture = picture.resize((picture.width * zoom, picture.height * zoom), Image.NEAREST)
    return picture


def save_images(images: torch.Tensor | np.ndarray, path: str | Path, ncol: int | None = None) -> Path:
    """.png: a grid; .npy: the raw array (N, *data_shape), as every image-writing command accepts."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
        return atomic_write(path, lambda tmp: np.save(tmp, array))
    if path.suffix.lower() == ".png":
        picture = image_grid(images, ncol)
        return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    raise VaekitError(f"cannot write {path}: --out must end in .png (a picture) or .npy (the arrays)")


WRAP = 16  # a strip of more items than this wraps onto more rows


def _wrapped(title: str, width: float, fontsize: float = 10, least: int = 12, whole_words: bool = False) -> str:
    """The title wrapped onto as few lines as fit `width` pixels at 100 dots per inch, each line measured in the
    font it is drawn in (an estimate of pixels per character cut long titles off at both edges); lines of `least`
    characters at the fewest, a word longer than a line broken unless `whole_words` (its own lines kept)."""
    import textwrap

    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    prop, measure = FontProperties(size=fontsize), TextToPath()

    def pixels(line: str) -> float:  # points at the font's size, to pixels at 100 dpi
        return measure.get_text_width_height_descent(line, prop, ismath=False)[0] * 100 / 72

    # No line of more characters than fit in `width` at the title's narrowest character (a space counted at its
    # advance between letters) can fit, and a wrap at more characters per line than its longest line is the same wrap:
    # so the search starts there, not at the title's length (each try measures every line: 0.9 s for a 60-word
    # title in a narrow picture)
    glyphs = [pixels(ch) for ch in set(title) if not ch.isspace()]
    space = pixels("x x") - pixels("xx") if " " in title else None
    narrowest = min([g for g in glyphs if g > 0] + ([space] if space and space > 0 else []), default=0.0)
    start = len(title) if narrowest <= 0 else min(len(title), int(width / narrowest) + 2)

    def fill(chars: int) -> str:
        return "\n".join(textwrap.fill(part, chars, break_long_words=not whole_words) for part in title.split("\n"))

    def fits(line: str) -> bool:  # (a word kept whole fits on its own line, however long)
        return pixels(line) <= width or (whole_words and " " not in line.strip())

    for chars in range(start, least - 1, -1):
        text = fill(chars)
        if all(fits(line) for line in text.splitlines()):
            return text
    return fill(least)


def labelled_grid(images: torch.Tensor | np.ndarray, path: str | Path, ncol: int | None = None,
                  captions: list[str] | None = None, row_labels: list[str] | None = None,
                  title: str | None = None) -> Path:
    """save_images, where a .png also says what it shows: a caption over each tile (e.g. the strength of an edit),
    a label left of each row (e.g. the latent dimension) and a title; tiles enlarged as image_grid enlarges them.
    A .npy is the raw array, as save_images writes it."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        return save_images(images, path, ncol)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiles = to_uint8_images(images)
    n, h, w, c = tiles.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    # tiles under captions at least MIN_CELL wide too (Frey's 28x20 faces: 84x60, not 56x40), and each caption
    # wrapped to its tile's width ("a: item 0" and "b: item 1" ran together over 40-pixel tiles)
    zoom = max(_zoom(h, w), math.ceil(MIN_CELL / w) if captions else 1)
    th, tw, pad = h * zoom, w * zoom, 6
    captions = [_wrapped(caption, tw + 2, fontsize=7, least=4, whole_words=True)
                for caption in captions or []] or None
    lines = max((caption.count("\n") + 1 for caption in captions or []), default=0)
    band = 11 * lines + 4 if captions else 0  # room for a caption (of one or more lines) over each tile
    canvas = np.full((nrow * (th + band + pad) + pad, ncol * (tw + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = pad + band + r * (th + band + pad), pad + col * (tw + pad)
        canvas[top:top + th, left:left + tw] = tiles[i].repeat(zoom, 0).repeat(zoom, 1)
    left_margin = 8 + 7 * max((len(label) for label in row_labels or []), default=0)
    if title:
        title = _wrapped(title, canvas.shape[1] + left_margin - 16)
    top_margin = 8 + 15 * (title.count("\n") + 1) if title else 0
    height, width = canvas.shape[0] + top_margin, canvas.shape[1] + left_margin
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((left_margin / width, 0, canvas.shape[1] / width, canvas.shape[0] / height))
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None, vmin=0, vmax=255,
              interpolation="nearest", extent=(0, canvas.shape[1], canvas.shape[0], 0))
    ax.set_axis_off()
    for i, caption in enumerate(captions or []):
        r, col = divmod(i, ncol)
        ax.text(pad + col * (tw + pad) + tw / 2, pad + band + r * (th + band + pad) - 3, caption, ha="center",
                va="bottom", fontsize=7, clip_on=False, linespacing=1.1)
    for r, label in enumerate(row_labels or []):
        ax.text(-4, pad + band + r * (th + band + pad) + th / 2, label, ha="right", va="center", fontsize=9,
                clip_on=False)
    if title:
        fig.text(0.5, 1 - 4 / height, title, ha="center", va="top", fontsize=10)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)


def captioned_panels(panels: list[tuple[str, torch.Tensor]], path: str | Path, ncol: int | None = None) -> Path:
    """Several grids side by side, each under its caption (e.g. VAE vs AE prior samples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = [np.asarray(image_grid(images, ncol)) for _, images in panels]
    # the figure sized by the grids' own shape: wide strips (an interpolation) one above the other, else side by side
    aspect = max(grid.shape[0] / grid.shape[1] for grid in grids)
    wide = aspect < 0.5
    width = 8.4 if wide else 4.2
    rows, cols = (len(panels), 1) if wide else (1, len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, (width * aspect + 0.5) * rows), squeeze=False)
    for ax, (title, _), grid in zip(axes.flat, panels, grids):
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=12)
        ax.axis("off")
    return _save_figure(fig, path)


def plot_latent_map(latent_map, path: str | Path, label_names: list[str] | tuple[str, ...] | None = None,
                    manifold=None, grid: int = 15, manifold_label: int | None = None,
                    codes: str = "posterior means", split: str | None = None) -> Path:
    """A latent.LatentMap as a scatter coloured by label; with `manifold` (the Model), also its decoded plane
    (a label-conditioned model decodes it with `manifold_label`, default class 0).

    The manifold panel decodes a grid x grid lattice over the central 90% of the points (5th to 95th
    percentile per axis, marked on the scatter): the latent itself for a 2-D latent, else the PCA plane
    through the mean code. Integer labels get one colour per class (named by label_names), other values a
    colour scale (so do more than 20 classes). Data that are not images get no manifold panel (logged). The scatter
    is drawn to scale (equal axes), its points in a shuffled order (no class drawn over the others). `codes`: what
    the points are, in the title ("codes" for a family without a posterior); `split`: which items, in the title.
    """
    from matplotlib.lines import Line2D
    import logging

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    points = np.asarray(latent_map.points)
    if grid < 2:
        raise VaekitError(f"a manifold grid needs at least 2 points per side, got {grid}")
    if manifold is not None:
        shape = tuple(manifold.data_shape)
        code_size = int(np.prod(manifold.code_shape))
        if code_size != latent_map.axes.shape[1]:
            raise VaekitError(
                f"the map was made with a {latent_map.axes.shape[1]}-D latent, the manifold model has {code_size}"
            )
        if len(shape) != 3 or shape[0] not in (1, 3):
            logging.getLogger(__name__).warning("data of shape %s are not images: no decoded manifold panel", shape)
            manifold = None
    fig, axes = plt.subplots(1, 2 if manifold is not None else 1, figsize=(13 if manifold is not None else 6.8, 6),
                             squeeze=False)
    ax = axes[0, 0]
    size = max(2.0, min(12.0, 4000 / max(len(points), 1)))
    labels = latent_map.labels
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.6, color="tab:blue", linewidths=0)
    elif (np.issubdtype(labels.dtype, np.integer) or np.all(labels == np.round(labels))) and \
            len(np.unique(labels)) <= 20:  # more classes than distinct colours (40 people): a colour scale
        classes = np.unique(labels).astype(int)
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        colours = np.asarray([cmap(k % cmap.N) for k in range(len(classes))])[np.searchsorted(classes, labels)]
        order = np.random.default_rng(0).permutation(len(points))  # classes interleaved, none hidden under the rest
        ax.scatter(points[order, 0], points[order, 1], s=size, alpha=0.7, c=colours[order], linewidths=0)
        names = [label_names[cls] if label_names is not None and 0 <= cls < len(label_names) else str(cls)
                 for cls in classes]
        handles = [Line2D([], [], marker="o", linestyle="", color=cmap(k % cmap.N), label=name)
                   for k, name in enumerate(names)]
        ax.legend(handles=handles, fontsize=8, loc="best", framealpha=0.8)
    else:
        scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, s=size, alpha=0.7, cmap="viridis", linewidths=0)
        fig.colorbar(scatter, ax=ax, fraction=0.046, pad=0.04)
    ax.set_aspect("equal", adjustable="datalim")  # to scale: a code that varies along one axis looks it
    first, second = latent_map.explained_variance
    items = f"{len(points)} {split} items" if split else f"{len(points)} items"
    if latent_map.projection == "latent":
        ax.set_xlabel("z[0]")
        ax.set_ylabel("z[1]")
        ax.set_title(f"{codes} of {items}")
    else:
        ax.set_xlabel(f"PC 1 ({first:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({second:.0%} of variance)")
        ax.set_title(f"{codes} of {items}, PCA of {latent_map.axes.shape[1]}-D codes")
    if manifold is not None:
        (x0, x1), (y0, y1) = np.percentile(points, [5, 95], axis=0).T
        if x1 - x0 < 1e-6:  # a 1-D latent: the second axis is constant
            x0, x1 = x0 - 1, x1 + 1
        if y1 - y0 < 1e-6:
            y0, y1 = y0 - 1, y1 + 1
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--", color="black", linewidth=1))
        xs, ys = np.linspace(x0, x1, grid), np.linspace(y1, y0, grid)  # top row = largest second coordinate
        lattice = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)  # row-major, as image_grid tiles
        codes = torch.from_numpy(latent_map.to_codes(lattice)).float().reshape(-1, *manifold.code_shape)
        label = None
        if manifold.num_labels:
            label = torch.tensor([manifold_label or 0])
        with torch.no_grad():
            images = manifold.decode_code(codes.to(manifold.device), label).mean.cpu()
        picture = np.asarray(image_grid(images, ncol=grid, pad=1))
        half_x, half_y = (x1 - x0) / (2 * (grid - 1)), (y1 - y0) / (2 * (grid - 1))  # lattice points are cell centres
        right = axes[0, 1]
        extent = (x0 - half_x, x1 + half_x, y0 - half_y, y1 + half_y)
        # square pixels, whatever the two axes' ranges: items that are not square (Frey's 28x20) keep their shape
        pixel_aspect = ((extent[1] - extent[0]) / picture.shape[1]) / ((extent[3] - extent[2]) / picture.shape[0])
        right.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255, extent=extent,
                     aspect=pixel_aspect, interpolation="antialiased")  # shrunk to fit: nearest would alias
        right.set_xlabel(ax.get_xlabel())
        right.set_ylabel(ax.get_ylabel())
        plane = "" if latent_map.projection == "latent" else ", PCA plane through the mean code"
        of_class = ""
        if label is not None:
            names = manifold.config.label_names
            of_class = f", class {names[int(label)] if int(label) < len(names) else int(label)}"
        right.set_title(f"decoded {grid}x{grid} grid over the box{of_class}\n(5th-95th percentile per axis){plane}",
                        fontsize=10)  # two lines: in one, the end (the class) was cut off the figure
    return _save_figure(fig, path)


def _save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
