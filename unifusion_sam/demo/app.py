"""The demo page: a Gradio ``Blocks`` app with four tabs over one loaded model (either family).

Tabs: **Sentence** (image + sentence -> overlay, mask PNG, score), **Examples** (a query image and 1..K
example images, each with the object painted over or its mask uploaded -> overlay), **Points** (clicks
add positive / negative points, optionally with a sentence; SAM family only) and **Video** (a video
file or zip of frames; paint the first frame's objects, one brush colour each, upload its mask, or type
a sentence -> tracked GIF + per-frame palette PNGs in a zip, with a progress bar; it can pause at a frame,
take clicks that correct an object there, and resume: :mod:`.video`). Every tab has a
status box: the score of a result, or what was wrong with the input (never a stack trace).

Offline: analytics are off, no share link, no server-side rendering (Node), and the theme uses the
system's fonts, so the page asks nothing from the internet. Requests run one at a time (one lock):
the model's predictor is stateful (its embedding cache).
"""

from __future__ import annotations

import atexit
import html
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, no version check

import gradio as gr  # noqa: E402

from ..data.io import DataError, davis_palette  # noqa: E402
from . import handlers  # noqa: E402
from . import video as videos  # noqa: E402
from .config import DemoConfig  # noqa: E402
from .inputs import DemoError, editor_labels, editor_mask, image_array, open_video  # noqa: E402
from .loading import DemoModel  # noqa: E402

logger = logging.getLogger(__name__)

EXAMPLE_BRUSH = "#1e90ff"
VIDEO_FILE_TYPES = [".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".gif", ".zip"]
MASK_FILE_TYPES = [".png", ".bmp", ".tif", ".tiff", ".gif"]
COLOUR_NAMES = ["dark red", "green", "olive", "navy", "purple", "teal", "grey", "brown"]
FONTS = ["DejaVu Sans", "Liberation Sans", "Helvetica", "Arial"]
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
    """Runs one request at a time and turns a bad input into a status message (and a toast)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, work: Callable[[], tuple], blanks: tuple) -> tuple:
        """``work()``'s outputs (the last one the status), or ``blanks`` and the message of what went wrong."""
        title = "Please check the input"
        try:
            with self.lock:
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


def _status(elem_id: str) -> gr.Textbox:
    return gr.Textbox(label="Status", interactive=False, elem_id=elem_id, max_lines=3)


def _result_image(elem_id: str, label: str = "Result") -> gr.Image:
    return gr.Image(label=label, type="numpy", interactive=False, format="png", elem_id=elem_id, height=IMAGE_HEIGHT,
                    elem_classes=["demo-picture"])


def _input_image(elem_id: str, label: str, scaled: bool = True) -> gr.Image:
    """An upload; ``scaled=False`` keeps small images at their own size (Gradio maps clicks to pixels assuming so)."""
    return gr.Image(label=label, type="numpy", image_mode="RGB", sources=["upload", "clipboard"], elem_id=elem_id,
                    height=IMAGE_HEIGHT, elem_classes=["demo-picture"] if scaled else None)


def _editor(elem_id: str, label: str, colours: list[str], sources=("upload", "clipboard")) -> gr.ImageEditor:
    return gr.ImageEditor(label=label, type="numpy", image_mode="RGBA", sources=sources, layers=False, transforms=(),
                          brush=gr.Brush(colors=colours, default_color=colours[0], color_mode="fixed"),
                          format="png", elem_id=elem_id)


def _mask_upload(elem_id: str, label: str) -> gr.File:
    return gr.File(label=label, file_types=MASK_FILE_TYPES, type="filepath", elem_id=elem_id)


# ----------------------------------------------------------------------------------------- tabs
def _sentence_tab(run: Runner, model, out_dir: Path) -> None:
    with gr.Row():
        with gr.Column():
            image = _input_image("sentence-image", "Image")
            text = gr.Textbox(label="Sentence", placeholder="the red circle on the left", elem_id="sentence-text")
            button = gr.Button("Segment", variant="primary", elem_id="sentence-run")
            status = _status("sentence-status")
        with gr.Column():
            overlay = _result_image("sentence-overlay")
            mask = gr.File(label="Mask (PNG, 0/255)", interactive=False, elem_id="sentence-mask")

    def on_segment(picture, sentence):
        def work():
            r = handlers.segment_sentence(model, picture, sentence, out_dir)
            return r.overlay, str(r.mask_path), r.message
        return run(work, (None, None))

    for event in (button.click, text.submit):
        event(on_segment, [image, text], [overlay, mask, status])


def _examples_tab(run: Runner, model, out_dir: Path, config: DemoConfig) -> None:
    gr.Markdown("Upload example images and paint over the object on each (or upload its mask as a 0/255 or "
                "palette PNG); the model segments the same kind of object in the query image. Empty slots are skipped.")
    editors, uploads = [], []
    with gr.Row():
        for k in range(1, config.max_examples + 1):
            with gr.Column(min_width=220):
                editors.append(_editor(f"example-{k}", f"Example {k}", [EXAMPLE_BRUSH]))
                uploads.append(_mask_upload(f"example-{k}-mask", f"…or example {k}'s mask"))
    with gr.Row():
        with gr.Column():
            query = _input_image("examples-query", "Query image")
            button = gr.Button("Segment", variant="primary", elem_id="examples-run")
            status = _status("examples-status")
        with gr.Column():
            overlay = _result_image("examples-overlay")
            mask = gr.File(label="Mask (PNG, 0/255)", interactive=False, elem_id="examples-mask")

    def on_segment(picture, *slots):
        def work():
            pairs = []
            for k, (value, upload) in enumerate(zip(slots[: len(editors)], slots[len(editors):]), start=1):
                image = None if value is None or value.get("background") is None else image_array(value, f"example {k}")
                drawn = None if image is None else editor_mask(value, image.shape[:2])
                pairs.append(handlers.example_pair(image, drawn, upload, k))
            r = handlers.segment_examples(model, picture, pairs, out_dir)
            return r.overlay, str(r.mask_path), r.message
        return run(work, (None, None))

    button.click(on_segment, [query, *editors, *uploads], [overlay, mask, status])


def _points_tab(run: Runner, served: DemoModel, out_dir: Path) -> None:
    if not served.supports_points:
        gr.Markdown("**Points are SAM prompts.** The model served here is a full UniRef++ model, which takes a "
                    "sentence or example masks only: use the Sentence or Examples tab.", elem_id="points-unsupported")
    with gr.Row():
        with gr.Column():
            image = _input_image("points-image", "Image: click on it to add points", scaled=False)
            kind = gr.Radio(list(handlers.POINT_LABELS), value="positive", label="A click adds a", elem_id="points-kind")
            text = gr.Textbox(label="Sentence (optional)", elem_id="points-text")
            with gr.Row():
                undo = gr.Button("Undo last point", elem_id="points-undo")
                clear = gr.Button("Clear points", elem_id="points-clear")
                button = gr.Button("Segment", variant="primary", elem_id="points-run")
            status = _status("points-status")
        with gr.Column():
            overlay = _result_image("points-overlay", "Result (green: positive, red: negative)")
            mask = gr.File(label="Mask (PNG, 0/255)", interactive=False, elem_id="points-mask")
    points = gr.State([])

    def segment(picture, chosen, sentence):
        def work():
            r = handlers.segment_points(served.model, picture, chosen, sentence, out_dir)
            return chosen, r.overlay, str(r.mask_path), r.message
        return run(work, (chosen, None, None))

    def on_click(picture, chosen, which, sentence, evt: gr.SelectData):
        if picture is None:
            return chosen, None, None, "⚠ Upload an image first."
        return segment(picture, handlers.add_point(chosen, evt.index[0], evt.index[1], which), sentence)

    def on_undo(picture, chosen, sentence):
        chosen = list(chosen or [])[:-1]
        if not chosen and handlers.sentence_or_none(sentence) is None:
            return [], None, None, "No points left: click on the object to add one."
        return segment(picture, chosen, sentence)

    image.select(on_click, [image, points, kind, text], [points, overlay, mask, status])
    undo.click(on_undo, [image, points, text], [points, overlay, mask, status])
    button.click(segment, [image, points, text], [points, overlay, mask, status])
    text.submit(segment, [image, points, text], [points, overlay, mask, status])
    reset = ([], None, None, "Click on the object to add a positive point.")
    clear.click(lambda: reset, None, [points, overlay, mask, status])
    image.change(lambda: reset, None, [points, overlay, mask, status])


def _video_tab(run: Runner, served: DemoModel, out_dir: Path, config: DemoConfig) -> None:
    model = served.model
    colours = object_colours(config.max_objects)
    names = ", ".join(f"{i} {COLOUR_NAMES[i - 1]}" for i in range(1, config.max_objects + 1))
    with gr.Row():
        with gr.Column():
            video = gr.File(label=f"Video ({', '.join(VIDEO_FILE_TYPES[:-1])}) or a .zip of frames",
                            file_types=VIDEO_FILE_TYPES, type="filepath", elem_id="video-file")
            gr.Markdown(f"Paint each object on the first frame in its own brush colour (objects {names}: the "
                        "colours of the result), or upload the first frame's mask, or type a sentence.")
            editor = _editor("video-editor", "First frame", colours, sources=())
            upload = _mask_upload("video-mask", "…or the first frame's mask (palette PNG: ids = objects, or 0/255)")
            text = gr.Textbox(label="…or a sentence (instead of masks)", elem_id="video-text")
            pause = gr.Textbox(label="Pause at frame (optional: to correct an object there with clicks)",
                               placeholder="e.g. 10 (empty: track to the end)", elem_id="video-pause")
            button = gr.Button("Track", variant="primary", elem_id="video-run")
            status = _status("video-status")
        with gr.Column():
            paused = gr.Image(label="Paused frame: click on it to correct the chosen object", type="numpy",
                              interactive=False, format="png", elem_id="video-paused")
            with gr.Row():
                which = gr.Dropdown(list(range(1, config.max_objects + 1)), value=1, label="Object to correct",
                                    elem_id="video-object", interactive=served.supports_points)
                kind = gr.Radio(list(handlers.POINT_LABELS), value="positive", label="A click adds a",
                                elem_id="video-kind", interactive=served.supports_points)
            with gr.Row():
                again = gr.Textbox(label="Then pause again at frame (optional)", placeholder="empty: to the end",
                                   elem_id="video-pause-again")
                resume = gr.Button("Resume", elem_id="video-resume")
            gif = gr.Image(label="Tracked", type="filepath", interactive=False, elem_id="video-gif", height=IMAGE_HEIGHT,
                           elem_classes=["demo-picture"])
            files = gr.File(label="Downloads: track.gif, masks.zip (one palette PNG per frame)", file_count="multiple",
                            interactive=False, elem_id="video-downloads")
    job = gr.State(None)

    def on_video(path):
        if path is None:
            return None, ""

        def work():
            clip = open_video(path, config.max_frames)
            frame, total = clip.first_frame(), clip.total
            count = f"{total} frames" if total else "a video"
            more = f" (only the first {config.max_frames} are tracked)" if clip.truncated else ""
            return ({"background": frame, "layers": [], "composite": frame},
                    f"{count}{more}: paint the objects on the first frame, or type a sentence")
        return run(work, (None,))

    def outcome(current, until, progress):
        """Track on to frame ``until`` (or the end): the paused frame, or the finished GIF and files."""
        videos.advance(current, videos.pause_frame(until),
                       lambda done, total: progress((done, total), desc="tracking", unit="frames"))
        if not current.finished:
            hint = " Click on it to correct an object, then Resume." if served.supports_points else " Resume to go on."
            return current, current.overlay(), None, None, f"paused after frame {current.done - 1}.{hint}"
        path, archive, message = videos.finish(current)
        return None, None, str(path), [str(path), str(archive)], message

    def on_track(path, value, mask_path, sentence, until, progress=gr.Progress()):  # noqa: B008 - Gradio's hook
        def work():
            clip = open_video(path, config.max_frames)
            drawn = None
            if value is not None and value.get("background") is not None:
                drawn = editor_labels(value, davis_palette()[1: config.max_objects + 1])
            labels = handlers.first_frame_labels(clip, drawn, mask_path)
            current = handlers.start_track(model, clip, labels=labels, sentence=sentence, out_dir=out_dir, config=config)
            return outcome(current, until, progress)
        return run(work, (None, None, None, None))

    def on_resume(current, until, progress=gr.Progress()):  # noqa: B008 - Gradio's hook
        def work():
            if current is None:
                raise DemoError("Nothing is paused: press Track first (with a frame to pause at).")
            return outcome(current, until, progress)
        return run(work, (current, None, None, None))

    def on_click(current, obj, label, evt: gr.SelectData):
        def work():
            if current is None:
                raise DemoError("Nothing is paused: track to a frame first, then click on it.")
            point = handlers.add_point([], evt.index[0], evt.index[1], label)
            videos.correct(current, int(obj), point)
            return current, current.overlay(), f"object {obj} corrected on frame {current.done - 1}: Resume to go on"
        return run(work, (current, gr.skip()))

    video.change(on_video, [video], [editor, status])
    button.click(on_track, [video, editor, upload, text, pause], [job, paused, gif, files, status])
    resume.click(on_resume, [job, again], [job, paused, gif, files, status])
    paused.select(on_click, [job, which, kind], [job, paused, status])


# ----------------------------------------------------------------------------------------- app
def build_app(served: DemoModel, config: DemoConfig | None = None, out_dir: str | os.PathLike | None = None) -> gr.Blocks:
    """The demo page over ``served`` (loaded once, shared by every visitor); files go to ``out_dir``
    (default: a new temporary folder, removed when the process exits)."""
    config = config or DemoConfig()
    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="unifusion-sam-demo-")
        atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    out_dir = Path(out_dir)
    run = Runner()
    with gr.Blocks(title="unifusion-sam demo", analytics_enabled=False) as app:
        gr.Markdown(f"# unifusion-sam demo\nSegment an object from a sentence, example masks or points; track objects "
                    f"through a video from first-frame masks or a sentence.  \nModel: {served.description}",
                    elem_id="model-line")
        if served.notice:
            gr.Markdown(f"**⚠ {served.notice}**", elem_id="model-notice")
        with gr.Tabs():
            with gr.Tab("Sentence", id="sentence"):
                _sentence_tab(run, served.model, out_dir)
            with gr.Tab("Examples", id="examples"):
                _examples_tab(run, served.model, out_dir, config)
            with gr.Tab("Points", id="points"):
                _points_tab(run, served, out_dir)
            with gr.Tab("Video", id="video"):
                _video_tab(run, served, out_dir, config)
    app.demo_out_dir = out_dir
    return app


def launch(served: DemoModel, *, host: str = "127.0.0.1", port: int | None = 7860, config: DemoConfig | None = None,
           block: bool = True, quiet: bool = False) -> gr.Blocks:
    """Serve the demo on ``http://host:port`` (offline: no analytics, no share link, no SSR); with
    ``block=False`` return at once (the server runs in a thread; ``app.close()`` stops it)."""
    app = build_app(served, config)
    app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=False, prevent_thread_lock=not block, quiet=quiet, ssr_mode=False,
        theme=theme(), css=CSS, allowed_paths=[str(app.demo_out_dir)], pwa=False, mcp_server=False, enable_monitoring=False,
        show_error=False)
    return app
