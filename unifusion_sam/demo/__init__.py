"""The web demo (``unifusion-sam demo``): segment and track from a sentence, example masks, points or
a first-frame mask in the browser.

- :mod:`.config`: :class:`~.config.DemoConfig`, the demo's limits (examples, objects, frames, GIF size; queue,
  concurrency, upload size, image pixels, zips, paused videos, how long files are kept);
- :mod:`.loading`: which model the demo serves (the default run's output, a checkpoint, or the untrained
  tiny model) -> :class:`~.loading.DemoModel`;
- :mod:`.inputs`: what the page hands over (editor drawings, uploaded images and masks, videos, zips of
  frames) -> numpy images, masks and label maps, checked against the limits before anything is decoded;
- :mod:`.archive`: zips of frames read in memory, refusing hostile ones (zip-slip, bombs, links, encryption);
- :mod:`.samples`: good and hostile uploads for the tests and ``benchmarks/demo_load.py``;
- :mod:`.handlers`: pure functions, model + numpy inputs -> overlays, masks, GIFs and zips
  (:class:`~.handlers.DemoError` for bad input);
- :mod:`.app`: the Gradio page and :mod:`.widgets`, its components (import ``gradio``:
  ``pip install "unifusion-sam[demo]"``).

Nothing here but :mod:`.app` and :mod:`.widgets` imports gradio, so the handlers are testable without it.
"""

from .config import DemoConfig

__all__ = ["DemoConfig"]
