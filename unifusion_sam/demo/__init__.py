"""The web demo (``unifusion-sam demo``): segment and track from a sentence, example masks, points or
a first-frame mask in the browser.

- :mod:`.config`: :class:`~.config.DemoConfig`, the demo's limits (examples, objects, frames, GIF size);
- :mod:`.loading`: which model the demo serves (the default run's output, a checkpoint, or the untrained
  tiny model) -> :class:`~.loading.DemoModel`;
- :mod:`.inputs`: what the page hands over (editor drawings, uploaded masks, videos, zips of frames)
  -> numpy images, masks and label maps;
- :mod:`.handlers`: pure functions, model + numpy inputs -> overlays, masks, GIFs and zips
  (:class:`~.handlers.DemoError` for bad input);
- :mod:`.app`: the Gradio page (imports ``gradio``: ``pip install "unifusion-sam[demo]"``).

Nothing here but :mod:`.app` imports gradio, so the handlers are testable without it.
"""

from .config import DemoConfig

__all__ = ["DemoConfig"]
