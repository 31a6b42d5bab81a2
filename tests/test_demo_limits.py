"""The web demo's limits and hostile uploads, at the level of :mod:`unifusion_sam.demo.inputs` (no server):
zips that climb out of their folder, decompression bombs (zip members, image headers), lying zip headers,
non-zips, oversized files, and the settings themselves; then the page's answers to a few of them over HTTP."""

from __future__ import annotations

import io
import re
import stat
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

from unifusion_sam.demo import DemoConfig, handlers
from unifusion_sam.demo.archive import read_member, unsafe_name
from unifusion_sam.demo.inputs import DemoError, check_upload, mask_file, open_video, read_image
from unifusion_sam.demo.samples import png_bomb, write_samples
from unifusion_sam.demo.video import PausedJobs

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
SMALL = DemoConfig(max_upload_mb=1, max_unzipped_mb=2, max_zip_members=10, max_image_pixels=64 * 64, max_frames=5)


def _png(h: int = 24, w: int = 32, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _zip(path, members: list[tuple[str, bytes]], compression=zipfile.ZIP_DEFLATED, infos=()):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
        for info, data in infos:
            zf.writestr(info, data)
    return path


def _frames(n: int) -> list[tuple[str, bytes]]:
    return [(f"clip/{i}.png", _png(seed=i)) for i in range(n)]


# ----------------------------------------------------------------------------------------- settings
def test_config_limits_are_checked_and_round_trip(tmp_path):
    config = DemoConfig()
    assert (config.concurrency_limit, config.max_queue, config.max_upload_mb, config.max_frames) == (1, 16, 50, 200)
    assert config.max_upload_bytes == 50 << 20 and config.max_image_pixels == 4096 * 4096
    config.save(tmp_path / "demo.json")
    assert DemoConfig.load(tmp_path / "demo.json") == config
    for bad in ({"max_queue": 0}, {"concurrency_limit": -1}, {"max_zip_members": 0}, {"max_paused_videos": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be > 0"):
            DemoConfig(**bad)
    for name in ("max_upload_mb", "max_unzipped_mb", "keep_minutes"):
        for value in (0, -1.0, float("nan"), float("inf"), True, "50"):
            with pytest.raises(ValueError, match=f"{name} must be a positive number, got {value!r}"):
                DemoConfig(**{name: value})
    with pytest.raises(TypeError, match=r"max_image_pixels must be an int, got 1.5"):
        DemoConfig(max_image_pixels=1.5)
    with pytest.raises(TypeError, match="max_frames"):
        DemoConfig(max_frames=2.5)
    with pytest.raises(ValueError, match="max_objects must be at most 8"):
        DemoConfig(max_objects=9)
    with pytest.raises(ValueError, match="gif_fps"):
        DemoConfig(gif_fps=0)


# ----------------------------------------------------------------------------------------- zips
@pytest.mark.parametrize("name, why", [("../evil.png", r"climbs out of its folder"),
                                       ("clip/../../evil.png", r"climbs out of its folder"),
                                       ("..\\evil.png", r"climbs out of its folder"),
                                       ("/etc/evil.png", r"is an absolute path"),
                                       ("\\evil.png", r"is an absolute path"),
                                       ("C:\\evil.png", r"names a drive")])
def test_zip_slip_is_refused(tmp_path, name, why):
    path = _zip(tmp_path / "slip.zip", [*_frames(2), (name, _png())])
    assert zipfile.ZipFile(path).namelist()[-1] == name  # the hostile name is really in the archive
    with pytest.raises(DemoError, match=rf"slip.zip: the member {re.escape(repr(name))} {why}"):
        open_video(path)
    assert list(tmp_path.iterdir()) == [path]  # nothing was extracted anywhere
    assert unsafe_name("clip/0001.png") is None and unsafe_name("a..b/c.png") is None


def test_zip_links_and_encrypted_members_are_refused(tmp_path):
    link = zipfile.ZipInfo("clip/2.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(DemoError, match=r"'clip/2.png' is a symbolic link"):
        open_video(_zip(tmp_path / "link.zip", _frames(2), infos=[(link, b"/etc/passwd")]))
    data = bytearray(_zip(tmp_path / "locked.zip", [("clip/0.png", _png())]).read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # zipfile clears the flag: set it by hand
        data[data.find(signature) + offset] |= 0x1
    (tmp_path / "locked.zip").write_bytes(bytes(data))
    with pytest.raises(DemoError, match=r"'clip/0.png' is encrypted; upload a zip without a password"):
        open_video(tmp_path / "locked.zip")


def test_zip_bombs_are_refused_before_decompressing(tmp_path):
    big = b"\x00" * (3 << 20)  # 3 MB of zeros: a few KB deflated
    path = _zip(tmp_path / "bomb.zip", [*_frames(1), ("clip/1.png", big)])
    assert path.stat().st_size < 50_000
    with pytest.raises(DemoError, match=r"bomb.zip: the member clip/1.png expands to 3.0 MB; a frame may be at most "
                                        r"1.0 MB \(max_upload_mb\)"):
        open_video(path, config=SMALL)
    many = _zip(tmp_path / "wide.zip", [(f"clip/{i}.png", b"\x00" * (900 << 10)) for i in range(4)])
    with pytest.raises(DemoError, match=r"wide.zip: its 4 frames expand to 3.5 MB; the demo reads at most 2.0 MB from "
                                        r"a zip \(max_unzipped_mb\)"):
        open_video(many, config=SMALL)
    # frames past max_frames are never read, so they do not count
    assert open_video(_zip(tmp_path / "long.zip", [*_frames(5), ("clip/9.png", big)]), config=SMALL).truncated


def test_zip_with_too_many_members_is_refused_from_its_end_record(tmp_path):
    path = _zip(tmp_path / "many.zip", [(f"{i}.txt", b"") for i in range(50)] + _frames(1))
    with pytest.raises(DemoError, match=r"many.zip lists 51 entries .*at most 10 entries \(max_zip_members\)"):
        open_video(path, config=SMALL)
    data = bytearray(path.read_bytes())  # an end record that lies about the count: the directory itself is counted
    end = data.rfind(b"PK\x05\x06")
    data[end + 8: end + 12] = struct.pack("<HH", 1, 1)
    (tmp_path / "liar.zip").write_bytes(bytes(data))
    with pytest.raises(DemoError, match=r"liar.zip holds 51 entries; .*at most 10 entries"):
        open_video(tmp_path / "liar.zip", config=SMALL)


def test_zip_member_that_lies_about_its_size_stops_early(tmp_path):
    data = bytearray(_zip(tmp_path / "lie.zip", [("clip/0.png", b"\x00" * (3 << 20))]).read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local and central headers: 3 MB -> 1 KB
        at = data.find(signature)
        assert struct.unpack_from("<I", data, at + offset)[0] == 3 << 20
        struct.pack_into("<I", data, at + offset, 1024)
    (tmp_path / "lie.zip").write_bytes(bytes(data))
    with pytest.raises(DemoError, match=r"lie.zip: cannot decompress clip/0.png \(Bad CRC-32"):
        open_video(tmp_path / "lie.zip", config=SMALL)
    with zipfile.ZipFile(_zip(tmp_path / "ok.zip", [("a.png", b"x" * 5000)])) as zf:  # the running budget
        with pytest.raises(ValueError, match=r"a.png expands to more than 0.0 MB .*although its header says less"):
            read_member(zf, zf.getinfo("a.png"), SMALL, budget=100)
        assert read_member(zf, zf.getinfo("a.png"), SMALL, budget=5000) == b"x" * 5000


def test_image_bomb_inside_a_zip_is_refused_from_its_header(tmp_path):
    path = _zip(tmp_path / "huge.zip", [("clip/0.png", png_bomb(10_000, 10_000))])
    assert path.stat().st_size < 100_000
    with pytest.raises(DemoError, match=r"huge.zip: clip/0.png is 10000 x 10000 = 100,000,000 pixels; the demo takes "
                                        r"images of at most 16,777,216 pixels \(max_image_pixels\)"):
        open_video(path)
    path = _zip(tmp_path / "larger.zip", [("clip/0.png", png_bomb(60_000, 60_000))])  # past Pillow's own limit
    with pytest.raises(DemoError, match=r"larger.zip: clip/0.png is 3,600,000,000 pixels; the demo takes images of at "
                                        r"most 16,777,216 pixels \(max_image_pixels\)"):
        open_video(path)


def test_not_a_zip_and_zip_without_frames(tmp_path):
    (tmp_path / "clip.zip").write_bytes(_png())  # an image renamed .zip
    with pytest.raises(DemoError, match=r"clip.zip is not a readable zip file \(no zip end record"):
        open_video(tmp_path / "clip.zip")
    (tmp_path / "cut.zip").write_bytes(_zip(tmp_path / "whole.zip", _frames(3)).read_bytes()[:-30])  # truncated
    with pytest.raises(DemoError, match=r"cut.zip is not a readable zip file"):
        open_video(tmp_path / "cut.zip")
    with pytest.raises(DemoError, match=r"empty.zip holds no frame images \(.jpg, .jpeg, .png"):
        open_video(_zip(tmp_path / "empty.zip", [("readme.txt", b"hi"), ("clip/", b""), ("__MACOSX/clip/._0.png", b"x")]))
    with pytest.raises(DemoError, match=r"nothing.zip holds no frame images"):
        open_video(_zip(tmp_path / "nothing.zip", []))


def test_video_length_is_cut_not_refused(tmp_path):
    video = open_video(_zip(tmp_path / "clip.zip", _frames(8)), config=SMALL)
    assert video.truncated and video.total == 5 and len(list(video.iter_frames())) == 5
    assert not open_video(_zip(tmp_path / "short.zip", _frames(5)), config=SMALL).truncated


def test_large_frames_are_refused(tmp_path):
    path = _zip(tmp_path / "big.zip", [("0.png", _png(80, 80))])
    with pytest.raises(DemoError, match=r"big.zip: 0.png is 80 x 80 = 6,400 pixels; .*at most 4,096 pixels"):
        open_video(path, config=SMALL)


# ----------------------------------------------------------------------------------------- files
def test_uploads_larger_than_the_limit_are_refused(tmp_path):
    (tmp_path / "big.png").write_bytes(_png() + b"\x00" * (1 << 20))
    with pytest.raises(DemoError, match=r"the image \(big.png\) is 1.0 MB; the demo takes files of at most 1 MB "
                                        r"\(max_upload_mb\)"):
        read_image(tmp_path / "big.png", SMALL)
    (tmp_path / "big.zip").write_bytes(b"\x00" * ((1 << 20) + 1))
    with pytest.raises(DemoError, match=r"the video \(big.zip\) is 1.0 MB; .*at most 1 MB"):
        open_video(tmp_path / "big.zip", config=SMALL)
    assert check_upload(None, SMALL) is None and check_upload(tmp_path / "big.zip", DemoConfig()) == tmp_path / "big.zip"
    with pytest.raises(DemoError, match=r"Cannot read the mask \(gone.png\)"):
        check_upload(tmp_path / "gone.png", SMALL, "the mask")


def test_images_are_checked_before_they_are_decoded(tmp_path):
    (tmp_path / "ok.png").write_bytes(_png(24, 32))
    assert read_image(tmp_path / "ok.png", SMALL).shape == (24, 32, 3) and read_image(None, SMALL) is None
    (tmp_path / "bomb.png").write_bytes(png_bomb(12_000, 12_000))  # 144 M pixels in a few KB
    assert (tmp_path / "bomb.png").stat().st_size < 50_000
    with pytest.raises(DemoError, match=r"the image \(bomb.png\) is 12000 x 12000 = 144,000,000 pixels; the demo takes "
                                        r"images of at most 16,777,216 pixels"):
        read_image(tmp_path / "bomb.png", DemoConfig())
    (tmp_path / "gigantic.png").write_bytes(png_bomb(100_000, 100_000))  # beyond Pillow's own limit too
    with pytest.raises(DemoError, match=r"the image \(gigantic.png\) is 10,000,000,000 pixels; the demo takes images "
                                        r"of at most 16,777,216 pixels \(max_image_pixels\)"):
        read_image(tmp_path / "gigantic.png", DemoConfig())
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DemoError, match=r"Cannot read the query \(corrupt.png\): not an image this demo can decode "
                                        r"\(PNG, JPEG"):
        read_image(tmp_path / "corrupt.png", SMALL, "the query")
    with pytest.raises(DemoError, match=r"example 2 is 80 x 70 = 5,600 pixels"):
        read_image({"background": np.zeros((70, 80, 4), np.uint8), "layers": []}, SMALL, "example 2")


def test_mask_bomb_is_refused_from_its_header(tmp_path):
    (tmp_path / "mask.png").write_bytes(png_bomb(10_000, 10_000))
    with pytest.raises(DemoError, match=r"the mask \(mask.png\) is 10000 x 10000 pixels but its image is 32 x 24"):
        mask_file(tmp_path / "mask.png", (24, 32))
    (tmp_path / "mask.png").write_bytes(png_bomb(40_000, 40_000))
    with pytest.raises(DemoError, match=r"the mask \(mask.png\) is 1,600,000,000 pixels: too large to be read"):
        mask_file(tmp_path / "mask.png", (24, 32))
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(DemoError, match=r"Cannot read the mask \(junk.png\)"):
        mask_file(tmp_path / "junk.png", (24, 32))


def test_the_load_tests_samples_are_refused_here_too(tmp_path):
    """What benchmarks/demo_load.py uploads: the good samples are read, every hostile one refused as expected."""
    config = DemoConfig(max_upload_mb=2)
    f = write_samples(tmp_path, config)
    assert open_video(f["clip"], config=config).total == 6 and read_image(f["scene"], config).shape == (160, 160, 3)
    first = mask_file(f["first"], (160, 160))
    assert first.max() >= 1 and set(np.unique(first)) == set(range(first.max() + 1))  # object ids 1..N
    for name, pattern in [("slip", r"'../../evil.png' climbs out of its folder"), ("zip_bomb", r"expands to 4.0 MB"),
                          ("not_zip", r"not a readable zip file"), ("no_images", r"holds no frame images"),
                          ("oversized", r"is 3.0 MB; the demo takes files of at most 2 MB")]:
        with pytest.raises(DemoError, match=pattern):
            open_video(f[name], config=config)
    for name, pattern in [("corrupt", r"not an image"), ("bomb", r"5016 x 5016 = 25,160,256 pixels"),
                          ("huge_bomb", r"2,500,000,000 pixels; the demo takes images of at most 16,777,216")]:
        with pytest.raises(DemoError, match=pattern):
            read_image(f[name], config)
    with pytest.raises(DemoError, match=r"is 70 x 50 pixels but its image is 160 x 160"):
        mask_file(f["wrong_mask"], (160, 160))
    assert f["oversized"].stat().st_blocks * 512 < 1 << 20  # sparse: nothing written


# ----------------------------------------------------------------------------------------- memory and disk
def test_paused_jobs_are_bounded_in_number_and_age():
    now = [0.0]
    closed = []

    class Job:
        def __init__(self, name):
            self.frames = type("Frames", (), {"close": lambda _self, n=name: closed.append(n)})()

    jobs = PausedJobs(2, ttl_s=60, clock=lambda: now[0])
    a, b = jobs.put(Job("a")), jobs.put(Job("b"))
    assert jobs.put(jobs.get(a), a) == a and len(jobs) == 2  # stored again: a is now the most recent
    c = jobs.put(Job("c"))  # the least recent (b) makes room
    assert closed == ["b"] and len(jobs) == 2
    with pytest.raises(DemoError, match=r"This paused video was closed: the demo keeps at most 2 paused videos, each "
                                        r"for 1 minutes"):
        jobs.get(b)
    with pytest.raises(DemoError, match="Nothing is paused"):
        jobs.get(None)
    now[0] = 61.0
    with pytest.raises(DemoError, match="was closed"):
        jobs.get(a)
    assert sorted(closed) == ["a", "b", "c"] and len(jobs) == 0
    jobs.drop(c)  # already gone: nothing to do


def test_prune_results_deletes_old_request_folders_only(tmp_path):
    old, new, other = tmp_path / "sentence-abc", tmp_path / "video-def", tmp_path / "mine"
    for folder in (old, new, other):
        folder.mkdir()
        (folder / "mask.png").write_bytes(b"x")
    import os

    os.utime(old, (1000, 1000))
    os.utime(other, (1000, 1000))
    assert handlers.prune_results(tmp_path, 3600) == 1
    assert not old.exists() and new.exists() and other.exists()


# ----------------------------------------------------------------------------------------- the page
def test_page_answers_hostile_uploads_with_clear_errors(tmp_path):
    """The served page over HTTP: named endpoints, a bounded queue, and a clear answer to each bad upload."""
    gradio_client = pytest.importorskip("gradio_client")
    httpx = pytest.importorskip("httpx")
    import socket

    from unifusion_sam.demo.app import launch
    from unifusion_sam.demo.loading import DemoModel
    from unifusion_sam.loading import load_model

    served = DemoModel(load_model("none", sam="tiny", seed=0), "sam", "tiny", None, True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = DemoConfig(max_upload_mb=1, max_queue=3, max_image_pixels=512 * 512)
    (tmp_path / "huge.zip").write_bytes(b"\x00" * (2 << 20))
    pixels = Image.MAX_IMAGE_PIXELS
    app = launch(served, host="127.0.0.1", port=port, block=False, quiet=True, config=config)
    try:
        assert Image.MAX_IMAGE_PIXELS == 512 * 512 and app.max_file_size == 1 << 20
        assert app._queue.max_size == 3 and app._queue.default_concurrency_limit == 1
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        assert {"/sentence", "/examples", "/points", "/points_click", "/points_undo", "/video_upload", "/video_track",
                "/video_resume", "/video_click"} <= names
        (tmp_path / "scene.png").write_bytes(_png(48, 64))
        *_, status = client.predict(gradio_client.handle_file(str(tmp_path / "scene.png")), "the square",
                                    api_name="/sentence")
        assert status.startswith("score ")
        _zip(tmp_path / "slip.zip", [*_frames(2), ("../../evil.png", _png())])
        _, status = client.predict(gradio_client.handle_file(str(tmp_path / "slip.zip")), api_name="/video_upload")
        assert status.startswith("⚠ slip.zip: the member '../../evil.png' climbs out of its folder")
        (tmp_path / "corrupt.png").write_bytes(b"not an image at all")
        with pytest.raises(gradio_client.exceptions.AppError, match=r"Cannot read the image \(corrupt.png\): not an image"):
            client.predict(gradio_client.handle_file(str(tmp_path / "corrupt.png")), "x", api_name="/sentence")
        (tmp_path / "bomb.png").write_bytes(png_bomb(600, 600))  # over the limit: refused from its header
        *_, status = client.predict(gradio_client.handle_file(str(tmp_path / "bomb.png")), "x", api_name="/sentence")
        assert status.startswith("⚠ the image (bomb.png) is 600 x 600 = 360,000 pixels; the demo takes images of at "
                                 "most 262,144 pixels (max_image_pixels)")
        (tmp_path / "bomb.png").write_bytes(png_bomb(1000, 1000))  # over twice the limit: Pillow refuses to open it
        with pytest.raises(gradio_client.exceptions.AppError, match=r"the image \(bomb.png\) is 1,000,000 pixels; the demo "
                                                                    r"takes images of at most 262,144 pixels"):
            client.predict(gradio_client.handle_file(str(tmp_path / "bomb.png")), "x", api_name="/sentence")
        with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client checks, as the page does
            client.predict(gradio_client.handle_file(str(tmp_path / "huge.zip")), api_name="/video_upload")
        reply = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", files={"files": ("huge.zip", b"\0" * (2 << 20))})
        assert reply.status_code == 413 and "maximum allowed size of 1048576 bytes" in reply.text
    finally:
        app.close()
        Image.MAX_IMAGE_PIXELS = pixels
