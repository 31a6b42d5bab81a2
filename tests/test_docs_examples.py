"""The Python code blocks of the README and of the docs' usage pages run as written, on the offline tiny
models: only the checkpoint names are substituted (a real SAM's weights by the random tiny SAM's, the Hub by
a stub), so a documented example can never silently rot. A block preceded by ``<!-- no-test: why -->`` is
skipped (a whole training run, real SAM 2 weights)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/getting-started.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "guide").glob("*.md"))]
BLOCK = re.compile(r"(<!--\s*no-test[^>]*-->\s*\n)?```python\n(.*?)```", re.S)
# checkpoint names -> the offline stand-ins the fixture writes
SUBSTITUTIONS = {
    '"vit_b", checkpoint="sam_vit_b_01ec64.pth"': '"tiny", checkpoint="sam_tiny.pth"',
    '"out/uniref-r50"': '"outputs/uniref_default/model"',
}

pytestmark = pytest.mark.usefixtures("one_thread")


def python_blocks(page: str) -> list[str]:
    text = (ROOT / page).read_text()
    blocks = [code for skip, code in BLOCK.findall(text) if not skip]
    for old, new in SUBSTITUTIONS.items():
        blocks = [b.replace(old, new) for b in blocks]
    return blocks


class FakeHubApi:
    """``huggingface_hub.HfApi`` for ``push_to_hub``: records the upload instead of sending it."""

    uploads: list = []

    def __init__(self, token=None):
        pass

    def create_repo(self, repo_id, **kwargs):
        return repo_id

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        FakeHubApi.uploads.append((repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        return f"https://huggingface.co/{repo_id}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The files the examples open: pictures and a short video from the synthetic generator, the run folders
    `make demo` / `make demo-uniref` would write (a random tiny SAM's adapter, an untrained small UniRef++),
    and the tiny SAM's weights in place of Meta's."""
    from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
    from unifusion_sam.sam import build_sam, wrap_sam
    from unifusion_sam.sam.builders import save_sam
    from unifusion_sam.uniref import build_uniref

    root = tmp_path_factory.mktemp("docs")
    config = SyntheticConfig(seed=1000, image_size=(128, 128), num_frames=8)
    scenes = SyntheticDataset("heldout", "ris", 2, config)
    Image.fromarray(scenes.scene(0).image).save(root / "photo.jpg")
    Image.fromarray(scenes.scene(1).image).save(root / "example.jpg")
    Image.fromarray(scenes.scene(1).mask.astype(np.uint8) * 255).save(root / "example.png")
    video = SyntheticDataset("heldout", "vos", 1, config).video(0)
    (root / "frames").mkdir()
    for i, frame in enumerate(video.frames[:8]):
        Image.fromarray(np.asarray(frame)).save(root / "frames" / f"{i:05d}.jpg")
    labels = np.asarray(video.annotations[0])
    Image.fromarray((labels == labels.max()).astype(np.uint8) * 255).save(root / "frames" / "00000.png")

    torch.manual_seed(0)
    sam = build_sam("tiny")
    torch.save(sam.state_dict(), root / "sam_tiny.pth")
    run = root / "outputs" / "default"
    wrap_sam(build_sam("tiny", checkpoint=root / "sam_tiny.pth"), adapter="sam-tiny").save_pretrained(run / "adapter")
    save_sam(sam, run / "sam_tiny.safetensors")
    build_uniref("uniref-small").save_pretrained(root / "outputs" / "uniref_default" / "model")
    return root


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_run_as_written(page, workdir, monkeypatch):
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip(f"{page} has no Python block to run")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHubApi)
    monkeypatch.chdir(workdir)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page}[python block {i}]", "exec"), namespace)  # noqa: S102
        except Exception as exc:  # noqa: BLE001 - say which block failed, with its code
            raise AssertionError(f"{page}, Python block {i} failed: {type(exc).__name__}: {exc}\n{code}") from exc


def test_every_usage_page_has_runnable_examples():
    runnable = {page: len(python_blocks(page)) for page in PAGES}
    for page in ("README.md", "docs/getting-started.md", "docs/guide/predict.md", "docs/guide/track.md",
                 "docs/guide/checkpoints.md", "docs/guide/full-model.md"):
        assert runnable[page] >= 1, runnable
