"""Uploads to try the demo with, good and hostile: what its tests and its load test
(``benchmarks/demo_load.py``) send.

:func:`write_samples` writes a synthetic scene and its mask, a 6-frame video as a zip of frames and its
first-frame mask, and the uploads the demo must refuse with a clear message: a mask of the wrong size, a
corrupt image, image bombs (a few KB of PNG declaring millions of pixels; :func:`png_bomb`), a zip whose
member climbs out of its folder (zip-slip), a zip bomb (a member that expands past the limit), an image
renamed ``.zip``, a zip without images, and a file larger than the upload limit (sparse on disk).
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .config import MB, DemoConfig

GOOD = ("scene", "mask", "clip", "first")
HOSTILE = ("wrong_mask", "corrupt", "bomb", "huge_bomb", "slip", "zip_bomb", "not_zip", "no_images", "oversized")


def png_bomb(width: int, height: int) -> bytes:
    """A PNG of a few KB whose header declares ``width x height`` RGB pixels (its data is only a few rows)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (1 + 3 * min(width, 4096)) * 4, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def zip_members(path: str | Path, members, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip of ``(name, bytes)`` members, names written as given (``../x.png`` included)."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return Path(path)


def write_samples(folder: str | Path, config: DemoConfig | None = None, seed: int = 0) -> dict[str, Path]:
    """Write the good (:data:`GOOD`) and hostile (:data:`HOSTILE`) uploads into ``folder``, sized against
    ``config``'s limits; their paths by name."""
    from ..data.io import save_palette_png
    from ..data.synthetic import SyntheticConfig, SyntheticDataset

    config = config or DemoConfig()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffixes = {"clip": ".zip", "slip": ".zip", "zip_bomb": ".zip", "not_zip": ".zip", "no_images": ".zip",
                "oversized": ".zip"}
    f = {name: folder / f"{name}{suffixes.get(name, '.png')}" for name in GOOD + HOSTILE}
    synthetic = SyntheticConfig(seed=1000 + seed, image_size=160, num_frames=6)
    scene = SyntheticDataset("heldout", "ris", 1, synthetic).scene(0)
    Image.fromarray(scene.image).save(f["scene"])
    Image.fromarray(scene.mask.astype(np.uint8) * 255).save(f["mask"])
    video = SyntheticDataset("heldout", "vos", 1, synthetic).video(0)
    frames = []
    for name, frame in zip(video.frame_names, video.frames):
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(frame)).save(buffer, "PNG")
        frames.append((f"clip/{name}.png", buffer.getvalue()))
    zip_members(f["clip"], frames)
    first = np.asarray(video.annotations[0], dtype=np.uint8)
    ids = np.unique(first[first > 0])
    save_palette_png(f["first"], np.searchsorted(np.concatenate([[0], ids]), first).astype(np.uint8))  # ids 1..N

    Image.fromarray(np.full((50, 70), 255, np.uint8)).save(f["wrong_mask"])
    f["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + random.Random(seed).randbytes(2000))
    side = int((1.5 * config.max_image_pixels) ** 0.5)  # over the demo's limit, under Pillow's (twice it)
    f["bomb"].write_bytes(png_bomb(side, side))
    f["huge_bomb"].write_bytes(png_bomb(50_000, 50_000))  # over Pillow's limit too
    zip_members(f["slip"], [*frames[:2], ("../../evil.png", frames[2][1])])
    with zipfile.ZipFile(f["zip_bomb"], "w", zipfile.ZIP_DEFLATED) as zf, zf.open("clip/00000.png", "w") as member:
        block = b"\x00" * MB  # deflates to about 1 KB per MiB
        for _ in range(int(config.max_upload_mb) + 2):
            member.write(block)
    f["not_zip"].write_bytes(f["scene"].read_bytes())
    zip_members(f["no_images"], [("clip/readme.txt", b"no frames here")])
    with open(f["oversized"], "wb") as out:
        out.truncate(config.max_upload_bytes + MB)
    return f
