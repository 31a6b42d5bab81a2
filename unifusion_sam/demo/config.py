"""The web demo's limits and defaults."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import JsonConfig, check_positive_int

MAX_PALETTE_OBJECTS = 8  # brush colours offered for the first-frame masks (DAVIS palette ids 1..8)


@dataclass
class DemoConfig(JsonConfig):
    """What the demo page offers and how much work one request may ask for.

    - ``max_examples``: example slots (image + mask) on the Examples tab, the K of K-shot;
    - ``max_objects``: brush colours on the Video tab, one per object (DAVIS palette ids 1..N, N <= 8);
    - ``max_frames``: frames of an uploaded video that are tracked (the rest are dropped, with a note);
    - ``max_short_side``: frames with a longer shorter side are downscaled for inference (0 = never);
    - ``gif_fps``: the tracked GIF's frame rate (its frames are thumbnails, as the CLI's ``track.gif``);
    - ``default_run``: the training run loaded when ``--checkpoint`` is not given (``make demo``'s output).
    """

    max_examples: int = 3
    max_objects: int = 4
    max_frames: int = 200
    max_short_side: int = 480
    gif_fps: float = 8.0
    default_run: str = "outputs/default"

    def __post_init__(self) -> None:
        for name in ("max_examples", "max_objects", "max_frames"):
            check_positive_int(name, getattr(self, name))
        if self.max_objects > MAX_PALETTE_OBJECTS:
            raise ValueError(f"max_objects must be at most {MAX_PALETTE_OBJECTS}, got {self.max_objects}")
        if isinstance(self.max_short_side, bool) or not isinstance(self.max_short_side, int) or self.max_short_side < 0:
            raise ValueError(f"max_short_side must be an int >= 0 (0 = never downscale), got {self.max_short_side!r}")
        if isinstance(self.gif_fps, bool) or not isinstance(self.gif_fps, (int, float)) or self.gif_fps <= 0:
            raise ValueError(f"gif_fps must be a positive number, got {self.gif_fps!r}")
