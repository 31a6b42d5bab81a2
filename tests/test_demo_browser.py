"""The web demo end to end: the app on 127.0.0.1, driven by headless Chromium through Selenium.

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) are used as they are; nothing
is downloaded, and the browser resolves no host but 127.0.0.1. Images and zips are uploaded through the
components' file inputs; masks are painted on the image editor's canvas with mouse drags (two brush
colours for two objects on the Video tab) and, for one example, uploaded as a file. One screenshot per
tab goes to the test's temporary folder and is copied to ``/tmp/demo_shots/``.
"""

import io
import json
import shutil
import socket
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip("the browser test needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the dev extra)")
pytest.importorskip("gradio", reason="the web demo needs gradio (the demo / dev extra)")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset  # noqa: E402
from unifusion_sam.demo import DemoConfig  # noqa: E402
from unifusion_sam.demo.app import launch  # noqa: E402
from unifusion_sam.demo.loading import load_demo_model  # noqa: E402
from unifusion_sam.loading import add_model_arguments  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SHOTS = Path("/tmp/demo_shots")
WAIT = 90  # seconds for a result on a busy 2-core machine
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A synthetic scene (160 x 160) and a 6-frame synthetic video as a zip, with the ground truth."""
    root = tmp_path_factory.mktemp("demo-data")
    config = SyntheticConfig(seed=1000, image_size=160, num_frames=6)
    scene = SyntheticDataset("heldout", "ris", 1, config).scene(0)
    Image.fromarray(scene.image).save(root / "scene.png")
    Image.fromarray(scene.mask.astype(np.uint8) * 255).save(root / "scene_mask.png")
    video = SyntheticDataset("heldout", "vos", 1, config).video(0)
    frames = [np.asarray(f) for f in video.frames]
    with zipfile.ZipFile(root / "clip.zip", "w") as zf:
        for name, frame in zip(video.frame_names, frames):
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="PNG")
            zf.writestr(f"clip/{name}.png", buffer.getvalue())
    return {"root": root, "scene": scene, "frames": frames, "labels": np.asarray(video.annotations[0])}


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """The demo with no trained model at hand: the untrained tiny SAM, and the notice saying so."""
    import argparse

    parser = argparse.ArgumentParser()
    add_model_arguments(parser, default_device="cpu")
    served = load_demo_model(parser.parse_args([]), DemoConfig(default_run=str(tmp_path_factory.mktemp("no-run"))))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = launch(served, host="127.0.0.1", port=port, block=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def driver():
    """One headless chromium for the module; every test loads the page afresh (an image editor, once used,
    keeps rendering with WebGL on the CPU, which would slow the tests after it)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1500",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    d = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield d
    d.quit()


# ----------------------------------------------------------------------------------------- helpers
def _wait(what, timeout: float = WAIT):
    end = time.time() + timeout
    while time.time() < end:
        try:
            found = what()
        except Exception:  # noqa: BLE001 - the page is still rendering
            found = None
        if found:
            return found
        time.sleep(0.25)
    raise TimeoutError(f"timed out waiting for {what}")


def _open(d, url: str, tab: str) -> None:
    d.get(url)
    _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#sentence-run"))
    if tab != "Sentence":
        [b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == tab][0].click()


def _upload(d, elem_id: str, path: Path) -> None:
    _wait(lambda: d.find_elements(By.CSS_SELECTOR, f"#{elem_id} input[type=file]"))[0].send_keys(str(path))


def _status(d, elem_id: str) -> str:
    return d.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea").get_attribute("value")


def _wait_status(d, elem_id: str, *needles: str) -> str:
    return _wait(lambda: (s := _status(d, elem_id)) and any(n in s for n in needles) and s)


def _fetch(src: str) -> bytes:
    with LOCAL.open(src, timeout=30) as response:
        return response.read()


def _picture(d, elem_id: str) -> np.ndarray:
    img = _wait(lambda: d.find_elements(By.CSS_SELECTOR, f"#{elem_id} img"))[0]
    return np.asarray(Image.open(io.BytesIO(_fetch(img.get_attribute("src")))).convert("RGB"))


def _settled_zoom(d, editor_id: str) -> float:
    """The editor's zoom once an uploaded image is in and the zoom has stopped changing (it fits the image)."""
    def zoom():
        return d.find_element(By.CSS_SELECTOR, f"#{editor_id} .zoom-number span").text

    def settled():
        seen = [zoom()]
        for _ in range(3):
            time.sleep(0.3)
            seen.append(zoom())
        text = d.find_element(By.CSS_SELECTOR, f"#{editor_id}").text
        return len(set(seen)) == 1 and seen[0].endswith("%") and "Upload an image" not in text and seen[0]

    return float(_wait(settled).strip("%")) / 100


def _paint(d, editor_id: str, points: list[tuple[float, float]], size: tuple[int, int]) -> None:
    """Short strokes on the editor's canvas at image pixels ``(x, y)``; the image sits centred at the shown zoom."""
    zoom = _settled_zoom(d, editor_id)
    canvas = d.find_element(By.CSS_SELECTOR, f"#{editor_id} .pixi-target canvas")
    h, w = size
    for x, y in points:
        dx, dy = int((x - w / 2) * zoom), int((y - h / 2) * zoom)
        stroke = ActionChains(d, duration=50).move_to_element_with_offset(canvas, dx - 4, dy).click_and_hold()
        for _ in range(4):
            stroke.move_by_offset(2, 0)
        stroke.release().perform()


def _pick_colour(d, editor_id: str, k: int) -> None:
    d.find_element(By.CSS_SELECTOR, f"#{editor_id} button[aria-label=Color]").click()
    _wait(lambda: d.find_elements(By.CSS_SELECTOR, f"#{editor_id} menu.swatch button.color"))[k].click()
    d.find_element(By.CSS_SELECTOR, f"#{editor_id} button[aria-label=Color]").click()


def _centre(mask: np.ndarray) -> tuple[float, float]:
    """A pixel well inside ``mask`` (the one farthest from its edge), as (x, y)."""
    from scipy.ndimage import distance_transform_edt

    y, x = np.unravel_index(np.argmax(distance_transform_edt(mask)), mask.shape)
    return float(x), float(y)


def _shot(d, tmp_path: Path, name: str) -> None:
    for close in d.find_elements(By.CSS_SELECTOR, "[data-testid='toast-close']"):  # an earlier check's message
        close.click()
    time.sleep(0.5)  # let the last image paint
    d.save_screenshot(str(tmp_path / f"{name}.png"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / f"{name}.png", SHOTS / f"{name}.png")
    d.get("about:blank")  # stop the page's rendering before the next test


def _external_requests(d) -> set[str]:
    urls = set()
    for entry in d.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            u = message["params"]["request"]["url"]
            if not u.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
                urls.add(u)
    return urls


# ----------------------------------------------------------------------------------------- tabs
def test_sentence_tab(driver, url, data, tmp_path):
    d, scene = driver, data["scene"]
    _open(d, url, "Sentence")
    assert "No trained model" in d.find_element(By.CSS_SELECTOR, "#model-notice").text
    _upload(d, "sentence-image", data["root"] / "scene.png")
    _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#sentence-image img"))
    d.find_element(By.CSS_SELECTOR, "#sentence-run").click()  # no sentence yet
    assert _wait_status(d, "sentence-status", "⚠").startswith("⚠ Type a sentence")
    toast = _wait(lambda: [t for t in d.find_elements(By.CSS_SELECTOR, "[data-testid='toast-body']") if t.text])
    assert "Type a sentence" in toast[0].text and "Traceback" not in d.page_source

    d.find_element(By.CSS_SELECTOR, "#sentence-text textarea").send_keys(scene.sentence)
    d.find_element(By.CSS_SELECTOR, "#sentence-run").click()
    status = _wait(lambda: (s := _status(d, "sentence-status")) and not s.startswith("⚠ Type") and s)
    assert status.startswith("score "), status
    overlay = _picture(d, "sentence-overlay")
    link = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#sentence-mask a"))[0].get_attribute("href")
    mask = np.asarray(Image.open(io.BytesIO(_fetch(link)))) > 0
    assert overlay.shape == scene.image.shape and mask.shape == scene.image.shape[:2] and mask.any()
    lower = slice(80, 160)  # below the caption band
    changed = np.abs(overlay.astype(int) - scene.image.astype(int)).sum(-1)[lower]
    assert (changed[mask[lower]] > 0).mean() > 0.9 and (changed[~mask[lower]] == 0).all()
    assert not _external_requests(d), "the page must not fetch anything from the internet"
    _shot(d, tmp_path, "sentence")


def test_examples_tab(driver, url, data, tmp_path):
    d, root, scene = driver, data["root"], data["scene"]
    _open(d, url, "Examples")
    _upload(d, "example-1", root / "scene.png")
    _paint(d, "example-1", [_centre(scene.mask)], scene.mask.shape)
    _upload(d, "example-2", root / "scene.png")
    _upload(d, "example-2-mask", root / "scene_mask.png")
    _upload(d, "examples-query", root / "scene.png")
    _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#examples-query img"))
    time.sleep(0.5)
    d.find_element(By.CSS_SELECTOR, "#examples-run").click()
    status = _wait_status(d, "examples-status", "score ", "⚠")
    assert status.startswith("2-shot, score "), status
    assert _picture(d, "examples-overlay").shape == scene.image.shape
    _shot(d, tmp_path, "examples")


def test_points_tab(driver, url, data, tmp_path):
    d, scene = driver, data["scene"]
    _open(d, url, "Points")
    _upload(d, "points-image", data["root"] / "scene.png")
    img = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#points-image img"))[0]
    _wait(lambda: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img))
    time.sleep(0.5)
    x, y = _centre(scene.mask)
    rect = d.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height, "
                            "arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
    scale = min(rect[0] / rect[2], rect[1] / rect[3], 1)  # how Gradio maps a click to a pixel
    ActionChains(d).move_to_element_with_offset(img, int((x - rect[2] / 2) * scale),
                                                int((y - rect[3] / 2) * scale)).click().perform()
    status = _wait_status(d, "points-status", "score ", "⚠")
    assert status.startswith("score "), status
    overlay = _picture(d, "points-overlay")
    greens = np.argwhere((overlay == (0, 220, 0)).all(-1))  # the positive point, drawn where the click landed
    assert len(greens) and np.abs(greens.mean(0) - (y, x)).max() < 4
    _shot(d, tmp_path, "points")


def test_video_tab(driver, url, data, tmp_path):
    d, labels, frames = driver, data["labels"], data["frames"]
    _open(d, url, "Video")
    _upload(d, "video-file", data["root"] / "clip.zip")
    status = _wait_status(d, "video-status", "frames", "⚠")
    assert status.startswith("6 frames: paint the objects"), status
    objects = [i for i in np.unique(labels) if i][:2]
    _paint(d, "video-editor", [_centre(labels == objects[0])], labels.shape)
    _pick_colour(d, "video-editor", 1)
    _paint(d, "video-editor", [_centre(labels == objects[1])], labels.shape)
    d.find_element(By.CSS_SELECTOR, "#video-run").click()
    status = _wait_status(d, "video-status", "tracked", "⚠")
    assert status == "tracked 2 objects from the first-frame mask through 6 frames", status
    links = _wait(lambda: [a.get_attribute("href") for a in d.find_elements(By.CSS_SELECTOR, "#video-downloads a")])
    assert sorted(link.rsplit("/", 1)[1] for link in links) == ["masks.zip", "track.gif"]
    with zipfile.ZipFile(io.BytesIO(_fetch([link for link in links if link.endswith("masks.zip")][0]))) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))
        first = np.asarray(Image.open(io.BytesIO(zf.read(names[0]))))
    assert len(names) == 6
    for k, obj in enumerate(objects, start=1):  # the painted strokes became objects 1 and 2 on the first frame
        x, y = _centre(labels == obj)
        assert first[int(y), int(x)] == k
    gif = Image.open(io.BytesIO(_fetch(_wait(lambda: d.find_elements(By.CSS_SELECTOR, "#video-gif img"))[0]
                                       .get_attribute("src"))))
    shown = np.asarray(gif.convert("RGB")).astype(int)
    changed = np.abs(shown - frames[0].astype(int)).sum(-1)
    assert changed[first > 0].mean() > 3 * changed[first == 0].mean() + 10  # the overlay is where the mask is
    _shot(d, tmp_path, "video")


def _track_until_paused(d, url, data, frame: int) -> None:
    """The Video tab: the test clip uploaded, its first object painted, tracked with a pause after ``frame``."""
    labels = data["labels"]
    _open(d, url, "Video")
    _upload(d, "video-file", data["root"] / "clip.zip")
    _wait_status(d, "video-status", "frames", "⚠")
    obj = [i for i in np.unique(labels) if i][0]
    _paint(d, "video-editor", [_centre(labels == obj)], labels.shape)
    d.find_element(By.CSS_SELECTOR, "#video-pause textarea").send_keys(str(frame))
    d.find_element(By.CSS_SELECTOR, "#video-run").click()
    status = _wait_status(d, "video-status", "paused", "⚠")
    assert status.startswith(f"paused after frame {frame}"), _status(d, "video-status")


def test_video_tab_pauses_takes_a_click_and_resumes(driver, url, data, tmp_path):
    d = driver
    _track_until_paused(d, url, data, 2)
    img = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#video-paused img"))[0]
    _wait(lambda: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img))
    time.sleep(0.5)
    rect = d.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height, "
                            "arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
    scale = min(rect[0] / rect[2], rect[1] / rect[3])
    x, y = 40.0, 120.0  # a click below the caption band
    ActionChains(d).move_to_element_with_offset(img, int((x - rect[2] / 2) * scale),
                                                int((y - rect[3] / 2) * scale)).click().perform()
    status = _wait_status(d, "video-status", "corrected", "⚠")
    assert status.startswith("object 1 corrected on frame 2"), status
    paused = _picture(d, "video-paused")
    greens = np.argwhere((paused == (0, 220, 0)).all(-1))  # the click, drawn on the paused frame
    assert len(greens) and np.abs(greens.mean(0) - (y, x)).max() < 6
    _shot(d, tmp_path, "video-paused")


def test_video_tab_resume_finishes(driver, url, data, tmp_path):
    d = driver
    _track_until_paused(d, url, data, 1)
    d.find_element(By.CSS_SELECTOR, "#video-resume").click()
    status = _wait_status(d, "video-status", "tracked", "⚠")
    assert status == "tracked 1 object from the first-frame mask through 6 frames", status
    links = _wait(lambda: [a.get_attribute("href") for a in d.find_elements(By.CSS_SELECTOR, "#video-downloads a")])
    with zipfile.ZipFile(io.BytesIO(_fetch([link for link in links if link.endswith("masks.zip")][0]))) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 6
