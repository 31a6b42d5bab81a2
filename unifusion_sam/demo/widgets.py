"""The demo page's building blocks: its components (uploads that Gradio cannot read become clear errors),
its look, and the :class:`Runner` that runs one request at a time and turns bad input into a message."""

from __future__ import annotations

import html
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, no version check

import gradio as gr  # noqa: E402

from ..data.io import DataError, davis_palette  # noqa: E402
from . import handlers  # noqa: E402
from .config import DemoConfig  # noqa: E402
from .inputs import DemoError, unreadable  # noqa: E402

logger = logging.getLogger("unifusion_sam.demo.app")

EXAMPLE_BRUSH = "#1e90ff"
VIDEO_FILE_TYPES = [".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".gif", ".zip"]
MASK_FILE_TYPES = [".png", ".bmp", ".tif", ".tiff", ".gif"]
COLOUR_NAMES = ["dark red", "green", "olive", "navy", "purple", "teal", "grey", "brown"]
FONTS = ["DejaVu Sans", "Liberation Sans", "Helvetica", "Arial"]
HIDDEN = {"api_visibility": "undocumented"}  # a second trigger of an event that has its API name already
IMAGE_HEIGHT = 360
# small pictures (synthetic scenes, GIF thumbnails) are shown scaled up to the component
CSS = ".demo-picture img { width: 100%; height: 100%; object-fit: contain; }"


def theme() -> gr.themes.Base:
    """Gradio's default look with the system's fonts (nothing is fetched from a font service)."""
    return gr.themes.Default(font=[*(gr.themes.Font(f) for f in FONTS), gr.themes.Font("sans-serif")],
                             font_mono=[gr.themes.Font("DejaVu Sans Mono"), gr.themes.Font("monospace")])


def object_colours(n: int) -> list[str]:
    """Brush colours of objects 1..n: the DAVIS palette, the colours the tracked masks are drawn in."""
    return ["#{:02x}{:02x}{:02x}".format(*davis_palette()[i]) for i in range(1, n + 1)]


class Runner:
    """Runs one request at a time and turns a bad input into a status message (and a toast); now and then
    deletes the result folders older than ``keep_s`` seconds from ``out_dir``."""

    def __init__(self, out_dir: Path | None = None, keep_s: float = float("inf")) -> None:
        self.lock = threading.Lock()
        self.out_dir, self.keep_s, self.pruned = out_dir, keep_s, time.monotonic()

    def __call__(self, work: Callable[[], tuple], blanks: tuple) -> tuple:
        """``work()``'s outputs (the last one the status), or ``blanks`` and the message of what went wrong."""
        title = "Please check the input"
        try:
            with self.lock:
                if self.out_dir is not None and time.monotonic() - self.pruned > min(60.0, self.keep_s):
                    self.pruned = time.monotonic()
                    handlers.prune_results(self.out_dir, self.keep_s)
                return work()
        except (DemoError, DataError) as exc:
            message = str(exc)
        except (ValueError, TypeError, OSError) as exc:
            logger.warning("demo request rejected: %s", exc)
            message = str(exc)
        except Exception as exc:  # noqa: BLE001 - the page shows a message, the server log the traceback
            logger.exception("demo request failed")
            title, message = "Error", f"Something went wrong ({type(exc).__name__}: {exc}); the server log has the details."
        gr.Warning(html.escape(message), title=title)
        return (*blanks, f"⚠ {message}")


def clear_errors(component, what: str, config: DemoConfig):
    """Gradio opens an uploaded image (and decodes an editor's) before any handler runs: what it cannot read
    becomes a ``gr.Error`` naming the upload (not Gradio's internals, not a temporary path)."""
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever Pillow or Gradio raised, the page gets one sentence
            upload = getattr(payload, "background", None) or payload
            name = getattr(upload, "orig_name", None) or "the upload"
            logger.warning("upload refused: %s", exc)
            raise gr.Error(html.escape(unreadable(f"{what} ({name})", exc, config)), title="Please check the input") from None

    component.preprocess = checked
    return component


def status_box(elem_id: str) -> gr.Textbox:
    return gr.Textbox(label="Status", interactive=False, elem_id=elem_id, max_lines=3)


def result_image(elem_id: str, label: str = "Result") -> gr.Image:
    return gr.Image(label=label, type="numpy", interactive=False, format="png", elem_id=elem_id, height=IMAGE_HEIGHT,
                    elem_classes=["demo-picture"])


def input_image(elem_id: str, label: str, config: DemoConfig, scaled: bool = True) -> gr.Image:
    """An upload, handed over as its file (Gradio reads only its header; :func:`.inputs.read_image` checks and
    decodes it); ``scaled=False`` keeps small images at their own size (Gradio maps clicks to pixels assuming so)."""
    image = gr.Image(label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"], elem_id=elem_id,
                     height=IMAGE_HEIGHT, elem_classes=["demo-picture"] if scaled else None)
    return clear_errors(image, f"the {label.split(':')[0].lower()}", config)


def image_editor(elem_id: str, label: str, colours: list[str], config: DemoConfig,
            sources=("upload", "clipboard")) -> gr.ImageEditor:
    painter = gr.ImageEditor(label=label, type="numpy", image_mode="RGBA", sources=sources, layers=False, transforms=(),
                             brush=gr.Brush(colors=colours, default_color=colours[0], color_mode="fixed"),
                             format="png", elem_id=elem_id)
    return clear_errors(painter, label.lower() if label.startswith("Example") else f"the {label.lower()}", config)


def mask_upload(elem_id: str, label: str) -> gr.File:
    return gr.File(label=label, file_types=MASK_FILE_TYPES, type="filepath", elem_id=elem_id)
