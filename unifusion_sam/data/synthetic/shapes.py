"""Drawing textured shapes and smooth backgrounds with numpy (no other dependency).

Shapes are defined analytically in a normalised frame (a disc of radius 1 has the same area as
every other class at the same ``radius``), so they can be rotated, scaled and placed at sub-pixel
positions; only the bounding box of a shape is evaluated. Textures are pinned to the shape (they
move with it in videos). Everything is float32 elementwise arithmetic, hence bit-reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 170, 55),
    "blue": (40, 85, 235),
    "yellow": (240, 220, 35),
    "purple": (145, 55, 205),
    "orange": (250, 135, 10),
    "white": (242, 242, 242),
}
SIZES: tuple[str, ...] = ("small", "large")

# Circumradius (in equal-area radius units) and base orientation of each class.
_EXTENT = {"circle": 1.0, "square": 1.2533, "triangle": 1.5551, "star": 1.5413, "ring": 1.2, "cross": 1.1938}
_BASE_ANGLE = {"circle": 0.0, "square": math.pi / 4, "triangle": -math.pi / 2, "star": -math.pi / 2,
               "ring": 0.0, "cross": 0.0}
_STAR_INNER = 0.45  # inner / outer radius of the 5-point star
_RING_INNER = 0.55  # inner / outer radius of the ring
_CROSS_HALF_WIDTH = 0.33  # arm half-width / arm half-length


@dataclass(frozen=True)
class ShapeSpec:
    """One shape: class, colour name, size category and its placement / texture parameters.

    ``radius`` is the equal-area radius in pixels; ``cx``/``cy`` the centre in pixel coordinates
    (x to the right, y down, pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``).
    """

    kind: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float
    angle: float = 0.0
    rgb: tuple[int, int, int] = (0, 0, 0)
    texture: str = "stripes"
    tex_params: tuple[float, ...] = ()

    @property
    def extent(self) -> float:
        """Circumradius in pixels: the shape lies inside a disc of this radius around the centre."""
        return _EXTENT[self.kind] * self.radius

    def moved(self, cx: float, cy: float, scale: float = 1.0) -> ShapeSpec:
        return ShapeSpec(self.kind, self.colour, self.size, cx, cy, self.radius * scale, self.angle,
                         self.rgb, self.texture, self.tex_params)


def sample_shape(rng: np.random.Generator, kind: str, colour: str, size: str, base_radius: float) -> ShapeSpec:
    """Random appearance (jittered size, rotation, colour and texture) for a shape of given attributes."""
    radius = base_radius * float(rng.uniform(0.9, 1.1))
    angle = 0.0 if kind in ("circle", "ring") else float(rng.uniform(-0.26, 0.26))
    rgb = tuple(int(np.clip(c + rng.integers(-10, 11), 0, 255)) for c in COLOURS[colour])
    texture = "stripes" if rng.random() < 0.5 else "mottled"
    if texture == "stripes":
        params = (float(rng.uniform(0, math.pi)), float(rng.uniform(3.5, 7.0)), float(rng.uniform(0, 2 * math.pi)),
                  float(rng.uniform(12, 22)))
    else:
        dirs = rng.uniform(0, math.pi, 3)
        periods = rng.uniform(5.0, 12.0, 3)
        phases = rng.uniform(0, 2 * math.pi, 3)
        params = tuple(float(v) for v in np.concatenate([dirs, periods, phases])) + (float(rng.uniform(14, 24)),)
    return ShapeSpec(kind, colour, size, 0.0, 0.0, radius, angle, rgb, texture, params)  # type: ignore[arg-type]


def shape_box(spec: ShapeSpec, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel box ``(y0, y1, x0, x1)`` (clipped to the image) that contains the shape."""
    e = spec.extent + 1.0
    y0, y1 = max(0, int(math.floor(spec.cy - e))), min(height, int(math.ceil(spec.cy + e)))
    x0, x1 = max(0, int(math.floor(spec.cx - e))), min(width, int(math.ceil(spec.cx + e)))
    return y0, max(y0, y1), x0, max(x0, x1)


def _local(spec: ShapeSpec, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    y0, y1, x0, x1 = box
    dy = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - spec.cy))[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - spec.cx))[None, :]
    return dx, dy


def _polygon(u: np.ndarray, v: np.ndarray, c: float, n: int) -> np.ndarray:
    """Regular ``n``-gon of circumradius ``c`` with a vertex on the +u axis (half-plane tests)."""
    apothem = np.float32(c * math.cos(math.pi / n))
    inside = None
    for j in range(n):
        a = (2 * j + 1) * math.pi / n  # edge normals lie between vertices
        h = u * np.float32(math.cos(a)) + v * np.float32(math.sin(a)) <= apothem
        inside = h if inside is None else inside & h
    return inside  # type: ignore[return-value]


def _star(u: np.ndarray, v: np.ndarray, c: float) -> np.ndarray:
    """5-point star, outer radius ``c``, a tip on the +u axis (exact, polar fold)."""
    r = np.sqrt(u * u + v * v)
    sector = np.float32(2 * math.pi / 5)
    phi = np.mod(np.arctan2(v, u), sector)
    psi = np.minimum(phi, sector - phi)  # 0 at a tip, pi/5 at a valley
    px, py = r * np.cos(psi), r * np.sin(psi)
    val_x, val_y = c * _STAR_INNER * math.cos(math.pi / 5), c * _STAR_INNER * math.sin(math.pi / 5)
    # inside iff on the origin's side of the line from the tip (c, 0) to the valley point
    return np.float32(val_x - c) * py - np.float32(val_y) * (px - np.float32(c)) >= 0


_LUT_RES = 512
_LUT_HALF = 1.25  # the star table covers [-1.25 c, 1.25 c]^2


@cache
def _star_table() -> np.ndarray:
    g = ((np.arange(_LUT_RES, dtype=np.float32) + 0.5) / _LUT_RES * 2 - 1) * np.float32(_LUT_HALF)
    return _star(g[None, :], g[:, None], 1.0)


def shape_mask(spec: ShapeSpec, box: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean mask of ``spec`` over the pixels of ``box``."""
    dx, dy = _local(spec, box)
    kind, c = spec.kind, _EXTENT[spec.kind]
    a = spec.angle + _BASE_ANGLE[kind]
    inv = 1.0 / spec.radius
    ca, sa = np.float32(math.cos(a) * inv), np.float32(math.sin(a) * inv)
    u = dx * ca + dy * sa
    v = dy * ca - dx * sa
    if kind == "circle":
        return u * u + v * v <= np.float32(c * c)
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= np.float32(c * c)) & (r2 >= np.float32((c * _RING_INNER) ** 2))
    if kind == "cross":
        au, av, w = np.abs(u), np.abs(v), np.float32(c * _CROSS_HALF_WIDTH)
        return ((au <= c) & (av <= w)) | ((av <= c) & (au <= w))
    if kind == "square":
        return _polygon(u, v, c, 4)
    if kind == "triangle":
        return _polygon(u, v, c, 3)
    if kind == "star":  # table lookup (1/512 of the star's size): 4x faster than the polar fold
        scale = np.float32(_LUT_RES / (2 * _LUT_HALF * c))
        off = np.float32(_LUT_HALF * c)
        iu = np.clip((u + off) * scale, 0, _LUT_RES - 1).astype(np.intp)
        iv = np.clip((v + off) * scale, 0, _LUT_RES - 1).astype(np.intp)
        return _star_table()[iv, iu]
    raise ValueError(f"unknown shape class {kind!r}")


def shape_luminance(spec: ShapeSpec, box: tuple[int, int, int, int]) -> np.ndarray:
    """``h x w`` float32 luminance offset (texture + shading) over ``box``; the texture follows the shape.

    Sinusoids are evaluated separably: ``sin(a x + b y + p) = sin(a x + p) cos(b y) + cos(a x + p) sin(b y)``.
    """
    dx, dy = _local(spec, box)
    p = spec.tex_params
    if spec.texture == "stripes":
        waves, amp = [(p[0], p[1], p[2])], p[3]
    else:
        waves, amp = [(p[k], p[3 + k], p[6 + k]) for k in range(3)], p[9] / 2.0
    lum = (dx - dy) * np.float32(6.0 / max(spec.radius, 1.0))  # mild light from the top right
    for direction, period, phase in waves:
        f = 2 * math.pi / period
        ax = dx * np.float32(f * math.cos(direction)) + np.float32(phase)
        by = dy * np.float32(f * math.sin(direction))
        lum = lum + (np.sin(ax) * np.cos(by) + np.cos(ax) * np.sin(by)) * np.float32(amp)
    return lum


@lru_cache(maxsize=64)
def _bilinear_index(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of an ``h x w x C`` float32 grid to ``height x width x C``."""
    g = np.ascontiguousarray(grid.transpose(2, 0, 1))  # channels first: faster broadcasting
    i0, i1, wy = _bilinear_index(height, g.shape[1])
    rows = g[:, i0] * (1 - wy)[None, :, None] + g[:, i1] * wy[None, :, None]
    j0, j1, wx = _bilinear_index(width, g.shape[2])
    out = rows[:, :, j0] * (1 - wx) + rows[:, :, j1] * wx
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Muted, smoothly varying ``height x width x 3`` float32 background (noise + gradient + grain)."""
    grey = rng.uniform(55, 150)
    tint = rng.uniform(-18, 18, 3)
    gh, gw = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    grid = rng.normal(0, 16, (gh, gw, 1)) + rng.normal(0, 8, (gh, gw, 3)) + (grey + tint)[None, None, :]
    gy, gx = rng.uniform(-25, 25, 2)  # a linear gradient, folded into the grid (bilinear keeps it linear)
    grid += gy * np.linspace(-1, 1, gh)[:, None, None] + gx * np.linspace(-1, 1, gw)[None, :, None]
    image = upsample(grid.astype(np.float32), height, width)
    image += (rng.random((height, width, 1), dtype=np.float32) - np.float32(0.5)) * np.float32(7.0)  # grain
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def paint(image: np.ndarray, labels: np.ndarray | None, spec: ShapeSpec, label: int,
          mask: np.ndarray | None = None) -> np.ndarray:
    """Draw ``spec`` on the float ``image`` (and ``label`` into ``labels``) in place; returns the mask."""
    h, w = image.shape[:2]
    box = shape_box(spec, h, w)
    if mask is None:
        mask = shape_mask(spec, box)
    y0, y1, x0, x1 = box
    region = image[y0:y1, x0:x1]
    region[mask] = np.asarray(spec.rgb, np.float32)[None, :] + shape_luminance(spec, box)[mask][:, None]
    if labels is not None:
        labels[y0:y1, x0:x1][mask] = label
    return mask
