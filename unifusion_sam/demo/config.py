"""The web demo's limits and defaults."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import JsonConfig, check_positive_int

MAX_PALETTE_OBJECTS = 8  # brush colours offered for the first-frame masks (DAVIS palette ids 1..8)
MB = 1 << 20


@dataclass
class DemoConfig(JsonConfig):
    """What the demo page offers and how much work one request may ask for.

    The page:

    - ``max_examples``: example slots (image + mask) on the Examples tab, the K of K-shot;
    - ``max_objects``: brush colours on the Video tab, one per object (DAVIS palette ids 1..N, N <= 8);
    - ``max_short_side``: frames with a longer shorter side are downscaled for inference (0 = never);
    - ``gif_fps``: the tracked GIF's frame rate (its frames are thumbnails, as the CLI's ``track.gif``);
    - ``default_run``: the training run loaded when ``--checkpoint`` is not given (``make demo``'s output).

    The server's load (the defaults fit a 2-core machine):

    - ``concurrency_limit``: requests worked on at once (Gradio's ``default_concurrency_limit``; the model
      itself runs one request at a time whatever this says, its predictor is stateful);
    - ``max_queue``: requests waiting for their turn; one more is refused with "the queue is full"
      (Gradio's ``queue(max_size=...)``);
    - ``max_paused_videos``: paused video tracks kept in memory for their pages (the oldest is closed first);
    - ``keep_minutes``: uploads, results and paused tracks are deleted this long after they were made.

    One request's input (each refused with a message naming the limit and the value):

    - ``max_upload_mb``: the largest file accepted, in MiB (Gradio's ``max_file_size``, and the demo's own
      check of every uploaded file); also the largest image inside a zip of frames once decompressed;
    - ``max_image_pixels``: the largest image or frame, width x height (also Pillow's
      ``Image.MAX_IMAGE_PIXELS`` in the server, which guards the images Gradio decodes itself);
    - ``max_frames``: frames of an uploaded video that are tracked; a longer video is cut there (the rest
      is dropped, and the page and the result say so), it is not refused;
    - ``max_zip_members``: entries in an uploaded zip of frames (files, folders, anything);
    - ``max_unzipped_mb``: the frames a zip expands to, all together, in MiB.
    """

    max_examples: int = 3
    max_objects: int = 4
    max_frames: int = 200
    max_short_side: int = 480
    gif_fps: float = 8.0
    default_run: str = "outputs/default"
    concurrency_limit: int = 1
    max_queue: int = 16
    max_paused_videos: int = 4
    keep_minutes: float = 60.0
    max_upload_mb: float = 50.0
    max_image_pixels: int = 4096 * 4096
    max_zip_members: int = 2000
    max_unzipped_mb: float = 1024.0

    def __post_init__(self) -> None:
        for name in ("max_examples", "max_objects", "max_frames", "concurrency_limit", "max_queue",
                     "max_paused_videos", "max_image_pixels", "max_zip_members"):
            check_positive_int(name, getattr(self, name))
        if self.max_objects > MAX_PALETTE_OBJECTS:
            raise ValueError(f"max_objects must be at most {MAX_PALETTE_OBJECTS}, got {self.max_objects}")
        if isinstance(self.max_short_side, bool) or not isinstance(self.max_short_side, int) or self.max_short_side < 0:
            raise ValueError(f"max_short_side must be an int >= 0 (0 = never downscale), got {self.max_short_side!r}")
        for name in ("gif_fps", "keep_minutes", "max_upload_mb", "max_unzipped_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number, got {value!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_unzipped_bytes(self) -> int:
        return int(self.max_unzipped_mb * MB)
