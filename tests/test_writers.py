import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from unifusion_sam.data.io import DataError, davis_palette, load_label_map, save_palette_png
from unifusion_sam.data.writers import (
    DavisWriter,
    RefYouTubeVOSWriter,
    make_submission_zip,
    read_palette,
    write_ref_youtube_vos,
    write_video_results,
)

FRAMES = ["00000", "00005", "00010"]


def label_maps(n=3, shape=(6, 9), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4, size=shape).astype(np.uint8) for _ in range(n)]


def masks(n=3, shape=(6, 9), seed=1):
    rng = np.random.default_rng(seed)
    return [rng.random(shape) > 0.5 for _ in range(n)]


def png_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_davis_writer_round_trip_with_default_palette(tmp_path):
    maps = label_maps()
    paths = DavisWriter(tmp_path).write_video("bike", FRAMES, maps)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [f"bike/{f}.png" for f in FRAMES]
    assert png_files(tmp_path) == [f"bike/{f}.png" for f in FRAMES]  # no temporary files left
    for path, expected in zip(paths, maps):
        np.testing.assert_array_equal(load_label_map(path), expected)
        np.testing.assert_array_equal(read_palette(path), davis_palette())


def test_dataset_palette_is_carried(tmp_path):
    custom = np.random.default_rng(3).integers(0, 256, size=(256, 3)).astype(np.uint8)
    first_annotation = tmp_path / "data" / "Annotations" / "v" / "00000.png"
    save_palette_png(first_annotation, np.zeros((4, 4), np.uint8), custom)
    np.testing.assert_array_equal(read_palette(first_annotation), custom)
    for palette in (first_annotation, custom):  # a palette PNG path or the array itself
        out = tmp_path / f"out_{type(palette).__name__}"
        (path,) = write_video_results(out, "v", ["00000.jpg"], label_maps(1), palette=palette)
        assert path.name == "00000.png"  # image suffixes of frame names are dropped
        np.testing.assert_array_equal(read_palette(path), custom)
    short = DavisWriter(tmp_path / "short", palette=[[1, 2, 3], [4, 5, 6]]).palette
    assert short.shape == (256, 3) and short[1].tolist() == [4, 5, 6] and not short[2:].any()


def test_bool_masks_are_object_one(tmp_path):
    (path,) = DavisWriter(tmp_path).write_video("v", ["0"], masks(1))
    np.testing.assert_array_equal(load_label_map(path), masks(1)[0].astype(np.uint8))


def test_ref_youtube_vos_pngs_are_0_255_grayscale(tmp_path):
    ms = masks()
    ms[1] = ms[1].astype(np.uint8)  # 0/1 integers work too
    paths = RefYouTubeVOSWriter(tmp_path).write_expression("vid", 0, FRAMES, ms)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [f"Annotations/vid/0/{f}.png" for f in FRAMES]
    for path, m in zip(paths, ms):
        with Image.open(path) as im:
            assert im.mode == "L"
            arr = np.asarray(im)
        assert set(np.unique(arr)) <= {0, 255}
        np.testing.assert_array_equal(arr, np.where(m != 0, 255, 0))
    assert png_files(tmp_path) == [f"Annotations/vid/0/{f}.png" for f in FRAMES]


def write_davis_results(root):
    writer = DavisWriter(root)
    writer.write_video("bike", FRAMES[:2], label_maps(2))
    writer.write_video("aerobatics", FRAMES[:1], label_maps(1))
    return root


DAVIS_MEMBERS = ["aerobatics/", "aerobatics/00000.png", "bike/", "bike/00000.png", "bike/00005.png"]


def test_zip_members_davis_and_youtube(tmp_path):
    results = write_davis_results(tmp_path / "res")
    with zipfile.ZipFile(make_submission_zip(results, tmp_path / "davis.zip", "davis")) as zf:
        assert zf.namelist() == DAVIS_MEMBERS
        assert zf.testzip() is None
        np.testing.assert_array_equal(
            np.asarray(Image.open(zf.open("bike/00005.png"))), load_label_map(results / "bike" / "00005.png"))
    with zipfile.ZipFile(make_submission_zip(results, tmp_path / "yt.zip", "youtube")) as zf:
        assert zf.namelist() == ["Annotations/"] + [f"Annotations/{m}" for m in DAVIS_MEMBERS]
    # a results folder that already holds Annotations/<video>/ gives the same members
    annotated = write_davis_results(tmp_path / "res2" / "Annotations").parent
    with zipfile.ZipFile(make_submission_zip(annotated, tmp_path / "d2.zip", "davis")) as zf:
        assert zf.namelist() == DAVIS_MEMBERS


def test_zip_members_ref_youtube_vos(tmp_path):
    writer = RefYouTubeVOSWriter(tmp_path / "res")
    writer.write_expression("v1", "0", FRAMES[:2], masks(2))
    writer.write_expression("v1", "1", FRAMES[:1], masks(1))
    write_ref_youtube_vos(tmp_path / "res", "v0", 0, FRAMES[:1], masks(1))
    with zipfile.ZipFile(make_submission_zip(tmp_path / "res", tmp_path / "r.zip", "ref_youtube_vos")) as zf:
        assert zf.namelist() == [
            "Annotations/", "Annotations/v0/", "Annotations/v0/0/", "Annotations/v0/0/00000.png",
            "Annotations/v1/", "Annotations/v1/0/", "Annotations/v1/0/00000.png", "Annotations/v1/0/00005.png",
            "Annotations/v1/1/", "Annotations/v1/1/00000.png",
        ]
    with pytest.raises(DataError, match="00000.png"):  # a DAVIS layout is one level too shallow
        make_submission_zip(write_davis_results(tmp_path / "d"), tmp_path / "bad.zip", "ref_youtube_vos")


def test_zip_is_byte_identical_across_runs(tmp_path):
    first = write_davis_results(tmp_path / "a")
    blobs = [make_submission_zip(first, tmp_path / "1.zip").read_bytes()]
    second = write_davis_results(tmp_path / "b")  # written again, with other file times
    for p in second.rglob("*.png"):
        os.utime(p, (1_700_000_000, 1_700_000_000))
    blobs.append(make_submission_zip(second, tmp_path / "2.zip").read_bytes())
    blobs.append(make_submission_zip(first, tmp_path / "1.zip").read_bytes())  # overwrite in place
    assert blobs[0] == blobs[1] == blobs[2]
    with zipfile.ZipFile(tmp_path / "1.zip") as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.zip", "2.zip", "a", "b"]  # no temporary zips


def test_writer_errors_name_the_file(tmp_path):
    writer = DavisWriter(tmp_path)
    with pytest.raises(ValueError, match=r"bike.00003\.png.*2-D"):
        writer.write_frame("bike", "00003", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"bike.00004\.png.*\[0, 255\].*300"):
        writer.write_frame("bike", "00004", np.full((4, 4), 300, np.int32))
    with pytest.raises(ValueError, match=r"bike.00005\.png.*integer"):
        writer.write_frame("bike", "00005", np.zeros((4, 4), np.float32))
    writer.write_frame("bike", "00000", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"collision in bike.*'00000\.jpg'.*'00000'"):
        writer.write_frame("bike", "00000.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"bike.00001\.png.*size"):
        writer.write_frame("bike", "00001", np.zeros((5, 4), np.uint8))
    with pytest.raises(ValueError, match="collision"):
        DavisWriter(tmp_path / "x").write_video("v", ["a", "A"], label_maps(2))
    with pytest.raises(ValueError, match=r"'v'.*3 frame names but 2"):
        DavisWriter(tmp_path / "y").write_video("v", FRAMES, label_maps(2))
    with pytest.raises(ValueError, match="invalid video name"):
        writer.write_frame("../escape", "0", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"vid.3.00000\.png.*2-D"):
        RefYouTubeVOSWriter(tmp_path).write_frame("vid", 3, "00000", np.zeros((2, 2, 2), bool))
    assert not list(tmp_path.rglob("*.tmp*"))


def test_zip_and_palette_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="results root not found.*nope"):
        make_submission_zip(missing, tmp_path / "z.zip")
    results = write_davis_results(tmp_path / "res")
    (results / "bike" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes\.txt"):
        make_submission_zip(results, tmp_path / "z.zip")
    (results / "bike" / "notes.txt").unlink()
    (results / "bike" / ".DS_Store").write_text("x")  # hidden files are skipped
    (results / "stray.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"stray\.png"):
        make_submission_zip(results, tmp_path / "z.zip")
    (results / "stray.png").unlink()
    (results / "empty").mkdir()
    with pytest.raises(DataError, match="empty results folder.*empty"):
        make_submission_zip(results, tmp_path / "z.zip")
    (results / "empty").rmdir()
    (results / "bike" / "00009.png.tmp.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"leftover temporary file.*00009"):
        make_submission_zip(results, tmp_path / "z.zip")
    with pytest.raises(ValueError, match="layout"):
        make_submission_zip(results, tmp_path / "z.zip", layout="mose")
    with pytest.raises(ValueError, match="inside the results folder"):
        make_submission_zip(results, results / "sub.zip")
    assert not (tmp_path / "z.zip").exists()
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((2, 2), np.uint8), mode="L").save(gray)
    with pytest.raises(DataError, match=r"gray\.png.*palette"):
        read_palette(gray)
    with pytest.raises(DataError, match=r"not found.*missing\.png"):
        DavisWriter(tmp_path, palette=tmp_path / "missing.png")
