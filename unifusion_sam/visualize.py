"""Pictures of predictions: mask overlays with crisp outlines, captions, prompts, GIFs, contact sheets.

Images are ``H x W x 3`` uint8 RGB (``H x W`` grayscale is accepted and expanded), masks ``H x W``
bool, label maps ``H x W`` integer object ids (0 = background) coloured with the DAVIS palette.
Every function returns a new array and leaves its inputs untouched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data.io import davis_palette, save_image_atomic

DEFAULT_COLOR = (30, 144, 255)
POSITIVE_COLOR = (0, 220, 0)
NEGATIVE_COLOR = (230, 0, 0)


def _rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8, got {image.dtype} (convert e.g. with (x * 255).round().astype(np.uint8))")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[..., :3].copy()
    raise ValueError(f"{name} must be H x W x 3 (or H x W), got shape {image.shape}")


def _check_map(array: np.ndarray, image: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != image.shape[:2]:
        raise ValueError(f"{name} shape {array.shape} does not match the image size {image.shape[:2]}")
    return array


def _auto_width(image: np.ndarray) -> int:
    return max(1, round(min(image.shape[:2]) / 160))


def _neighbours(array: np.ndarray) -> list[np.ndarray]:
    """The 4 neighbours of every pixel (edge-replicated, so the image border has no foreign neighbour)."""
    p = np.pad(array, 1, mode="edge")
    h, w = array.shape
    return [p[:h, 1:w + 1], p[2:, 1:w + 1], p[1:h + 1, :w], p[1:h + 1, 2:]]


def boundary(label_map: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of non-zero regions within ``width`` 4-connected steps of a pixel with another label.

    An inner outline: always inside the region; the image border does not count as a boundary.
    """
    labels = np.asarray(label_map)
    edge = np.zeros(labels.shape, dtype=bool)
    for other in _neighbours(labels):
        edge |= other != labels
    for _ in range(int(width) - 1):  # grow inward, staying inside each region
        grown = edge.copy()
        for near_edge, near_label in zip(_neighbours(edge), _neighbours(labels)):
            grown |= near_edge & (near_label == labels)
        edge = grown
    return edge & (labels != 0)


def _blend(image: np.ndarray, where: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = image.astype(np.float32)
    out[where] = (1.0 - alpha) * out[where] + alpha * colors.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay_mask(image: np.ndarray, mask: np.ndarray, color: Sequence[int] = DEFAULT_COLOR, alpha: float = 0.5,
                 outline: bool = True, outline_width: int | None = None) -> np.ndarray:
    """Tint the pixels of ``mask`` toward ``color`` and draw its boundary in the full colour.

    Pixels outside the mask are unchanged. ``outline_width`` defaults to about 1/160 of the shorter side.
    """
    image = _rgb(image)
    mask = _check_map(mask, image, "mask").astype(bool)
    color = np.asarray(color, dtype=np.float32).reshape(3)
    out = _blend(image, mask, color, alpha)
    if outline:
        out[boundary(mask, outline_width or _auto_width(image))] = np.rint(color).astype(np.uint8)
    return out


def overlay_label_map(image: np.ndarray, label_map: np.ndarray, palette: np.ndarray | None = None,
                      alpha: float = 0.5, outline: bool = True, outline_width: int | None = None) -> np.ndarray:
    """Tint each object id > 0 with its palette colour (DAVIS palette by default) and outline it."""
    image = _rgb(image)
    labels = _check_map(label_map, image, "label_map")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"label_map must hold integer ids, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"label ids must be in [0, 255], got range [{labels.min()}, {labels.max()}]")
    pal = davis_palette() if palette is None else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if pal.shape[0] <= labels.max(initial=0):
        raise ValueError(f"palette has {pal.shape[0]} colours but the label map holds id {labels.max()}")
    fg = labels != 0
    out = _blend(image, fg, pal[labels[fg]], alpha)
    if outline:
        edge = boundary(labels, outline_width or _auto_width(image))
        out[edge] = pal[labels[edge]]
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _ink_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, word: str) -> int:
    return int(font.getbbox(word)[2])


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int, gap: float) -> list[list[str]]:
    """Words per line; ``gap`` is the space between words (the default font's own space is too thin)."""
    lines: list[list[str]] = []
    for paragraph in text.splitlines() or [""]:
        line: list[str] = []
        for word in paragraph.split():
            if line and sum(_ink_width(font, w) for w in line + [word]) + gap * len(line) > width:
                lines.append(line)
                line = []
            line.append(word)
        lines.append(line)
    return lines


def draw_caption(image: np.ndarray, text: str, position: str = "top", font_size: int | None = None,
                 band_alpha: float = 0.65) -> np.ndarray:
    """Write ``text`` in white on a darkened band across the top (or bottom) of the image.

    The image keeps its size and only the band's rows change. Long sentences wrap; the band is at most
    half the image high (extra lines end with an ellipsis).
    """
    if position not in ("top", "bottom"):
        raise ValueError(f"position must be 'top' or 'bottom', got {position!r}")
    image = _rgb(image)
    h, w = image.shape[:2]
    size = font_size or max(10, round(min(h, w) / 16))
    font = _font(size)
    margin = max(2, size // 3)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (size, 0)
    line_h = ascent + descent + max(1, size // 6)
    gap = max(2, round(0.35 * size))
    lines = _wrap(str(text), font, w - 2 * margin, gap)
    max_lines = max(1, (h // 2 - 2 * margin) // line_h)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1] + ["..."]
    band_h = min(h, len(lines) * line_h + 2 * margin)
    band = slice(0, band_h) if position == "top" else slice(h - band_h, h)
    out = image.copy()
    out[band] = np.rint(out[band] * (1.0 - band_alpha)).astype(np.uint8)
    canvas = Image.fromarray(out[band])  # drawing on the band alone keeps text from spilling over
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        x = margin
        for word in line:
            draw.text((x, margin + i * line_h), word, fill=(255, 255, 255), font=font)
            x += _ink_width(font, word) + gap
    out[band] = np.asarray(canvas)
    return out


def draw_points(image: np.ndarray, coords: np.ndarray, labels: Sequence[int] | np.ndarray,
                radius: int | None = None) -> np.ndarray:
    """Draw point prompts (``N x 2`` pixel ``(x, y)``, SAM's convention): label 1 green, 0 red, -1 skipped."""
    image = _rgb(image)
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(coords):
        raise ValueError(f"{len(coords)} points but {len(labels)} labels")
    r = radius or max(2, round(min(image.shape[:2]) / 48))
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for (x, y), label in zip(coords, labels):
        if label < 0:
            continue
        if label not in (0, 1):
            raise ValueError(f"point labels must be 1 (positive), 0 (negative) or -1 (padding), got {label}")
        fill = POSITIVE_COLOR if label == 1 else NEGATIVE_COLOR
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=(255, 255, 255), width=max(1, r // 3))
    return np.asarray(canvas).copy()


def draw_box(image: np.ndarray, box: Sequence[float] | np.ndarray, color: Sequence[int] = POSITIVE_COLOR,
             width: int | None = None) -> np.ndarray:
    """Draw a box prompt ``(x0, y0, x1, y1)`` in pixels (SAM's XYXY convention)."""
    image = _rgb(image)
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, got {(x0, y0, x1, y1)}")
    canvas = Image.fromarray(image)
    ImageDraw.Draw(canvas).rectangle((x0, y0, x1, y1), outline=tuple(int(c) for c in color),
                                     width=width or _auto_width(image))
    return np.asarray(canvas).copy()


def _overlay_any(image: np.ndarray, mask_or_label_map: np.ndarray, alpha: float) -> np.ndarray:
    array = np.asarray(mask_or_label_map)
    return (overlay_mask if array.dtype == bool else overlay_label_map)(image, array, alpha=alpha)


def captioned_overlay(image: np.ndarray, mask_or_label_map: np.ndarray, caption: str | None = None,
                      alpha: float = 0.5) -> np.ndarray:
    """The overlay of a bool mask (one colour) or a label map (palette colours), with ``caption`` on top."""
    out = _overlay_any(image, mask_or_label_map, alpha)
    return draw_caption(out, caption) if caption else out


def thumbnail(picture: np.ndarray, max_side: int = 320) -> np.ndarray:
    """``picture`` shrunk (bilinear) so its longer side is at most ``max_side``; unchanged when it fits."""
    h, w = picture.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return picture
    return np.asarray(Image.fromarray(picture).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                      Image.BILINEAR))


def save_png(im: Image.Image | np.ndarray, path: str | os.PathLike) -> Path:
    """Write a PIL image (or an array) as a PNG, atomically (a temporary file renamed into place)."""
    return save_image_atomic(im if isinstance(im, Image.Image) else Image.fromarray(im), Path(path), "PNG")


def save_overlay(path: str | os.PathLike, image: np.ndarray, mask_or_label_map: np.ndarray,
                 caption: str | None = None, alpha: float = 0.5) -> Path:
    """Save the overlay of a bool mask (one colour) or a label map (palette colours) as a PNG."""
    return save_png(captioned_overlay(image, mask_or_label_map, caption, alpha), path)


def save_gif(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 8, loop: int = 0) -> Path:
    """Save frames (``H x W x 3`` uint8, all one size) as an animated GIF that loops forever by default.

    Pillow merges consecutive identical frames into one longer frame, so a still stretch of video
    reads back as fewer frames with the same total duration.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    images: list[Image.Image] = []
    for i, frame in enumerate(frames):
        frame = _rgb(frame, f"frame {i}")
        if images and frame.shape[1::-1] != images[0].size:
            raise ValueError(f"frame {i} has shape {frame.shape}, expected the {images[0].size[::-1]} of frame 0")
        images.append(Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT,
                                                      dither=Image.Dither.NONE))
    if not images:
        raise ValueError("save_gif needs at least one frame")
    return save_image_atomic(images[0], Path(path), "GIF", save_all=True, append_images=images[1:],
                        duration=max(20, round(1000 / fps)), loop=loop)


def track_to_gif(path: str | os.PathLike, frames: Iterable[np.ndarray], label_maps: Iterable[np.ndarray],
                 captions: str | Sequence[str | None] | None = None, fps: float = 8, alpha: float = 0.5) -> Path:
    """Overlay a track (bool masks or label maps, one per frame) on its frames and save a GIF.

    ``captions``: one sentence for every frame (e.g. the referring expression), or one per frame.
    """
    frames, label_maps = list(frames), list(label_maps)
    if len(frames) != len(label_maps):
        raise ValueError(f"{len(frames)} frames but {len(label_maps)} label maps")
    if captions is None or isinstance(captions, str):
        captions = [captions] * len(frames)
    captions = list(captions)
    if len(captions) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(captions)} captions")
    pictures = []
    for frame, labels, caption in zip(frames, label_maps, captions):
        out = _overlay_any(frame, labels, alpha)
        pictures.append(draw_caption(out, caption) if caption else out)
    return save_gif(path, pictures, fps=fps)


def make_grid(images: Sequence[np.ndarray], ncols: int | None = None, pad: int = 4,
              pad_value: int | Sequence[int] = 255) -> np.ndarray:
    """Tile images into a contact sheet, row by row; cells take the largest size, images sit top-left.

    ``ncols`` defaults to ``ceil(sqrt(n))``; ``pad`` pixels of ``pad_value`` separate and frame the cells.
    Bool masks are drawn as black/white.
    """
    tiles = [_rgb(np.asarray(im).astype(np.uint8) * 255 if np.asarray(im).dtype == bool else im, f"image {i}")
             for i, im in enumerate(images)]
    if not tiles:
        raise ValueError("make_grid needs at least one image")
    if pad < 0 or (ncols is not None and ncols < 1):
        raise ValueError(f"need pad >= 0 and ncols >= 1, got pad={pad}, ncols={ncols}")
    ncols = ncols or math.ceil(math.sqrt(len(tiles)))
    nrows = math.ceil(len(tiles) / ncols)
    ch, cw = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    grid = np.empty((nrows * (ch + pad) + pad, ncols * (cw + pad) + pad, 3), dtype=np.uint8)
    grid[...] = np.asarray(pad_value, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        grid[y: y + tile.shape[0], x: x + tile.shape[1]] = tile
    return grid
