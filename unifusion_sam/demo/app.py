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
the model's predictor is stateful (its embedding cache). The server's limits are :class:`.DemoConfig`'s:
a bounded queue, the upload size (Gradio refuses larger files; the demo checks every file again), image
pixels (the demo reads uploaded images itself, header first), zips of frames (:mod:`.archive`), video
length, and how many paused videos and how old files are kept. Every event has a stable API name
(``/sentence``, ``/examples``, ``/points``, ``/points_click``, ``/video_upload``, ``/video_track``, ...).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, no version check

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from ..data.io import davis_palette  # noqa: E402
from . import handlers  # noqa: E402
from . import video as videos  # noqa: E402
from .config import DemoConfig  # noqa: E402
from .inputs import DemoError, check_upload, editor_labels, editor_mask, image_array, open_video, read_image  # noqa: E402
from .loading import DemoModel  # noqa: E402
from .widgets import (  # noqa: E402, F401 - theme, object_colours and Runner were defined here before
    COLOUR_NAMES,
    CSS,
    EXAMPLE_BRUSH,
    HIDDEN,
    IMAGE_HEIGHT,
    VIDEO_FILE_TYPES,
    Runner,
    image_editor,
    input_image,
    mask_upload,
    object_colours,
    result_image,
    status_box,
    theme,
)


# ----------------------------------------------------------------------------------------- tabs
def _sentence_tab(run: Runner, model, out_dir: Path, config: DemoConfig) -> None:
    with gr.Row():
        with gr.Column():
            image = input_image("sentence-image", "Image", config)
            text = gr.Textbox(label="Sentence", placeholder="the red circle on the left", elem_id="sentence-text")
            button = gr.Button("Segment", variant="primary", elem_id="sentence-run")
            status = status_box("sentence-status")
        with gr.Column():
            overlay = result_image("sentence-overlay")
            mask = gr.File(label="Mask (PNG, 0/255)", interactive=False, elem_id="sentence-mask")

    def on_segment(picture, sentence):
        def work():
            r = handlers.segment_sentence(model, read_image(picture, config, "the image"), sentence, out_dir)
            return r.overlay, str(r.mask_path), r.message
        return run(work, (None, None))

    button.click(on_segment, [image, text], [overlay, mask, status], api_name="sentence")
    text.submit(on_segment, [image, text], [overlay, mask, status], api_name="sentence_submit", **HIDDEN)


def _examples_tab(run: Runner, model, out_dir: Path, config: DemoConfig) -> None:
    gr.Markdown("Upload example images and paint over the object on each (or upload its mask as a 0/255 or "
                "palette PNG); the model segments the same kind of object in the query image. Empty slots are skipped.")
    editors, uploads = [], []
    with gr.Row():
        for k in range(1, config.max_examples + 1):
            with gr.Column(min_width=220):
                editors.append(image_editor(f"example-{k}", f"Example {k}", [EXAMPLE_BRUSH], config))
                uploads.append(mask_upload(f"example-{k}-mask", f"…or example {k}'s mask"))
    with gr.Row():
        with gr.Column():
            query = input_image("examples-query", "Query image", config)
            button = gr.Button("Segment", variant="primary", elem_id="examples-run")
            status = status_box("examples-status")
        with gr.Column():
            overlay = result_image("examples-overlay")
            mask = gr.File(label="Mask (PNG, 0/255)", interactive=False, elem_id="examples-mask")

    def on_segment(picture, *slots):
        def work():
            pairs = []
            for k, (value, upload) in enumerate(zip(slots[: len(editors)], slots[len(editors):]), start=1):
                value = read_image(value, config, f"example {k}")
                image = None if value is None or value.get("background") is None else image_array(value, f"example {k}")
                drawn = None if image is None else editor_mask(value, image.shape[:2])
                upload = check_upload(upload, config, f"the mask of example {k}")
                pairs.append(handlers.example_pair(image, drawn, upload, k))
            r = handlers.segment_examples(model, read_image(picture, config, "the query image"), pairs, out_dir)
            return r.overlay, str(r.mask_path), r.message
        return run(work, (None, None))

    button.click(on_segment, [query, *editors, *uploads], [overlay, mask, status], api_name="examples")


def _points_tab(run: Runner, served: DemoModel, out_dir: Path, config: DemoConfig) -> None:
    if not served.supports_points:
        gr.Markdown("**Points are SAM prompts.** The model served here is a full UniRef++ model, which takes a "
                    "sentence or example masks only: use the Sentence or Examples tab.", elem_id="points-unsupported")
    with gr.Row():
        with gr.Column():
            image = input_image("points-image", "Image: click on it to add points", config, scaled=False)
            kind = gr.Radio(list(handlers.POINT_LABELS), value="positive", label="A click adds a", elem_id="points-kind")
            text = gr.Textbox(label="Sentence (optional)", elem_id="points-text")
            with gr.Row():
                undo = gr.Button("Undo last point", elem_id="points-undo")
                clear = gr.Button("Clear points", elem_id="points-clear")
                button = gr.Button("Segment", variant="primary", elem_id="points-run")
            status = status_box("points-status")
        with gr.Column():
            overlay = result_image("points-overlay", "Result (green: positive, red: negative)")
            mask = gr.File(label="Mask (PNG, 0/255)", interactive=False, elem_id="points-mask")
    points = gr.State([])

    def segment(picture, chosen, sentence):
        def work():
            r = handlers.segment_points(served.model, read_image(picture, config, "the image"), chosen, sentence,
                                        out_dir)
            return chosen, r.overlay, str(r.mask_path), r.message
        return run(work, (chosen, None, None))

    def on_click(picture, chosen, which, sentence, evt: gr.SelectData):
        if picture is None:
            return chosen, None, None, "⚠ Upload an image first."
        try:
            point = handlers.add_point(chosen, evt.index[0], evt.index[1], which)
        except (DemoError, TypeError, IndexError, ValueError) as exc:
            return chosen, None, None, f"⚠ Cannot add that point: {exc}"
        return segment(picture, point, sentence)

    def on_undo(picture, chosen, sentence):
        chosen = list(chosen or [])[:-1]
        if not chosen and handlers.sentence_or_none(sentence) is None:
            return [], None, None, "No points left: click on the object to add one."
        return segment(picture, chosen, sentence)

    outputs = [points, overlay, mask, status]
    image.select(on_click, [image, points, kind, text], outputs, api_name="points_click")
    undo.click(on_undo, [image, points, text], outputs, api_name="points_undo")
    button.click(segment, [image, points, text], outputs, api_name="points")
    text.submit(segment, [image, points, text], outputs, api_name="points_submit", **HIDDEN)
    reset = ([], None, None, "Click on the object to add a positive point.")
    # cheap, and never behind a long video track in the queue
    clear.click(lambda: reset, None, outputs, api_name="points_clear", concurrency_limit=None)
    image.change(lambda: reset, None, outputs, api_name="points_reset", concurrency_limit=None, **HIDDEN)


def _video_tab(run: Runner, served: DemoModel, out_dir: Path, config: DemoConfig, paused_jobs: videos.PausedJobs) -> None:
    model = served.model
    colours = object_colours(config.max_objects)
    names = ", ".join(f"{i} {COLOUR_NAMES[i - 1]}" for i in range(1, config.max_objects + 1))
    with gr.Row():
        with gr.Column():
            video = gr.File(label=f"Video ({', '.join(VIDEO_FILE_TYPES[:-1])}) or a .zip of frames",
                            file_types=VIDEO_FILE_TYPES, type="filepath", elem_id="video-file")
            gr.Markdown(f"Paint each object on the first frame in its own brush colour (objects {names}: the "
                        "colours of the result), or upload the first frame's mask, or type a sentence.")
            editor = image_editor("video-editor", "First frame", colours, config, sources=())
            upload = mask_upload("video-mask", "…or the first frame's mask (palette PNG: ids = objects, or 0/255)")
            text = gr.Textbox(label="…or a sentence (instead of masks)", elem_id="video-text")
            pause = gr.Textbox(label="Pause at frame (optional: to correct an object there with clicks)",
                               placeholder="e.g. 10 (empty: track to the end)", elem_id="video-pause")
            button = gr.Button("Track", variant="primary", elem_id="video-run")
            status = status_box("video-status")
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
    job = gr.State(None)  # the key of this page's paused job in ``paused_jobs``

    def on_video(path):
        if path is None:
            return None, ""

        def work():
            clip = open_video(path, config=config)
            frame, total = clip.first_frame(), clip.total
            count = f"{total} frames" if total else "a video"
            more = f" (only the first {config.max_frames} are tracked)" if clip.truncated else ""
            return ({"background": frame, "layers": [], "composite": frame},
                    f"{count}{more}: paint the objects on the first frame, or type a sentence")
        return run(work, (None,))

    def outcome(current, until, progress, key=None):
        """Track on to frame ``until`` (or the end): the paused frame (the job kept under ``key``), or the
        finished GIF and files (the job let go)."""
        try:
            videos.advance(current, videos.pause_frame(until),
                           lambda done, total: progress((done, total), desc="tracking", unit="frames"))
        except DemoError:
            paused_jobs.drop(key)
            raise
        if not current.finished:
            hint = " Click on it to correct an object, then Resume." if served.supports_points else " Resume to go on."
            return (paused_jobs.put(current, key), current.overlay(), None, None,
                    f"paused after frame {current.done - 1}.{hint}")
        paused_jobs.drop(key)
        path, archive, message = videos.finish(current)
        return None, None, str(path), [str(path), str(archive)], message

    def on_track(path, value, mask_path, sentence, until, key, progress=gr.Progress()):  # noqa: B008 - Gradio's hook
        def work():
            paused_jobs.drop(key)  # a new track replaces this page's paused one
            clip = open_video(path, config=config)
            drawn = None
            if value is not None and value.get("background") is not None:
                drawn = editor_labels(read_image(value, config, "the first frame"),
                                      davis_palette()[1: config.max_objects + 1])
            upload = check_upload(mask_path, config, "the first-frame mask")
            labels = handlers.first_frame_labels(clip, drawn, upload)
            current = handlers.start_track(model, clip, labels=labels, sentence=sentence, out_dir=out_dir, config=config)
            return outcome(current, until, progress)
        return run(work, (None, None, None, None))

    def on_resume(key, until, progress=gr.Progress()):  # noqa: B008 - Gradio's hook
        return run(lambda: outcome(paused_jobs.get(key), until, progress, key), (key, None, None, None))

    def on_click(key, obj, label, evt: gr.SelectData):
        def work():
            current = paused_jobs.get(key)
            point = handlers.add_point([], evt.index[0], evt.index[1], label)
            videos.correct(current, int(obj), point)
            return key, current.overlay(), f"object {obj} corrected on frame {current.done - 1}: Resume to go on"
        return run(work, (key, gr.skip()))

    video.change(on_video, [video], [editor, status], api_name="video_upload")
    button.click(on_track, [video, editor, upload, text, pause, job], [job, paused, gif, files, status],
                 api_name="video_track")
    resume.click(on_resume, [job, again], [job, paused, gif, files, status], api_name="video_resume")
    paused.select(on_click, [job, which, kind], [job, paused, status], api_name="video_click")


# ----------------------------------------------------------------------------------------- app
def build_app(served: DemoModel, config: DemoConfig | None = None, out_dir: str | os.PathLike | None = None) -> gr.Blocks:
    """The demo page over ``served`` (loaded once, shared by every visitor); files go to ``out_dir``
    (default: a new temporary folder, removed when the process exits)."""
    config = config or DemoConfig()
    keep_s = 60.0 * config.keep_minutes
    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="unifusion-sam-demo-")
        atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    out_dir = Path(out_dir)
    run = Runner(out_dir, keep_s)
    paused_jobs = videos.PausedJobs(config.max_paused_videos, keep_s)
    # Gradio's own copies of uploads and results, deleted as old as the demo's
    delete_cache = (max(1, int(min(keep_s, 600))), max(1, int(keep_s)))
    with gr.Blocks(title="unifusion-sam demo", analytics_enabled=False, delete_cache=delete_cache) as app:
        gr.Markdown(f"# unifusion-sam demo\nSegment an object from a sentence, example masks or points; track objects "
                    f"through a video from first-frame masks or a sentence.  \nModel: {served.description}",
                    elem_id="model-line")
        if served.notice:
            gr.Markdown(f"**⚠ {served.notice}**", elem_id="model-notice")
        with gr.Tabs():
            with gr.Tab("Sentence", id="sentence"):
                _sentence_tab(run, served.model, out_dir, config)
            with gr.Tab("Examples", id="examples"):
                _examples_tab(run, served.model, out_dir, config)
            with gr.Tab("Points", id="points"):
                _points_tab(run, served, out_dir, config)
            with gr.Tab("Video", id="video"):
                _video_tab(run, served, out_dir, config, paused_jobs)
    app.demo_out_dir, app.demo_config, app.demo_paused_jobs = out_dir, config, paused_jobs
    return app


def launch(served: DemoModel, *, host: str = "127.0.0.1", port: int | None = 7860, config: DemoConfig | None = None,
           block: bool = True, quiet: bool = False) -> gr.Blocks:
    """Serve the demo on ``http://host:port`` (offline: no analytics, no share link, no SSR) within
    ``config``'s limits; with ``block=False`` return at once (the server runs in a thread; ``app.close()``
    stops it). Lowers Pillow's ``Image.MAX_IMAGE_PIXELS`` for the whole process to ``config.max_image_pixels``
    (Gradio decodes the image editors' uploads itself)."""
    config = config or DemoConfig()
    Image.MAX_IMAGE_PIXELS = min(Image.MAX_IMAGE_PIXELS or config.max_image_pixels, config.max_image_pixels)
    app = build_app(served, config)
    # uploads Gradio cannot read are gr.Errors (_clear_errors), the handlers' errors status messages; anything
    # else stays "Error" on the page and a traceback in the server's log (show_error=False)
    app.queue(max_size=config.max_queue, default_concurrency_limit=config.concurrency_limit).launch(
        server_name=host, server_port=port, share=False, prevent_thread_lock=not block, quiet=quiet, ssr_mode=False,
        theme=theme(), css=CSS, allowed_paths=[str(app.demo_out_dir)], pwa=False, mcp_server=False, enable_monitoring=False,
        show_error=False, max_file_size=config.max_upload_bytes)
    return app
