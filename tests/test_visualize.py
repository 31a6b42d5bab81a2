import numpy as np
import pytest
from PIL import Image, ImageSequence

from unifusion_sam.data.io import davis_palette
from unifusion_sam.visualize import (
    boundary,
    draw_box,
    draw_caption,
    draw_points,
    make_grid,
    overlay_label_map,
    overlay_mask,
    save_gif,
    save_overlay,
    track_to_gif,
)


def image(h=40, w=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3)).astype(np.uint8)


def disk(h=40, w=50, cy=20, cx=25, r=10):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def inner_edge(mask):
    """Mask pixels with a 4-neighbour outside the mask (the image border does not count)."""
    p = np.pad(mask, 1, mode="edge")
    outside = ~p[:-2, 1:-1] | ~p[2:, 1:-1] | ~p[1:-1, :-2] | ~p[1:-1, 2:]
    return mask & outside


def test_overlay_tints_inside_and_leaves_outside_unchanged():
    img, mask, color = image(), disk(), np.array([255, 0, 0])
    out = overlay_mask(img, mask, color=tuple(color), alpha=0.5, outline_width=1)
    assert out.shape == img.shape and out.dtype == np.uint8
    interior = mask & ~inner_edge(mask)
    before = np.abs(img[interior].astype(int) - color).sum(axis=1)
    after = np.abs(out[interior].astype(int) - color).sum(axis=1)
    assert np.all(after <= before) and after.mean() < 0.6 * before.mean()
    np.testing.assert_allclose(out[interior], 0.5 * img[interior] + 0.5 * color, atol=0.51)
    np.testing.assert_array_equal(out[~mask], img[~mask])  # every pixel outside is untouched
    assert np.array_equal(overlay_mask(img, mask, alpha=0.0, outline=False), img)


def test_outline_pixels_are_on_the_mask_boundary():
    img, mask = image(), disk()
    with_line = overlay_mask(img, mask, color=(0, 255, 0), outline_width=1)
    without = overlay_mask(img, mask, color=(0, 255, 0), outline=False)
    changed = np.any(with_line != without, axis=2)
    edge = inner_edge(mask)
    assert changed.any() and np.all(edge[changed])  # outline only on boundary pixels ...
    assert np.all(with_line[edge] == (0, 255, 0))  # ... and the whole boundary is drawn in the colour
    thick = boundary(mask, 3)
    assert np.all(mask[thick]) and np.all(edge <= thick) and thick.sum() > 2 * edge.sum()
    full = np.zeros((6, 6), bool)
    full[:, :3] = True  # touching the image border: only the side facing the background is outlined
    assert boundary(full).nonzero()[1].tolist() == [2] * 6


def test_overlay_label_map_uses_palette_colours_and_outlines_each_object():
    img = image()
    labels = np.zeros((40, 50), np.int64)
    labels[5:20, 5:20] = 1
    labels[5:20, 20:35] = 2  # touches object 1
    out = overlay_label_map(img, labels, alpha=1.0)
    pal = davis_palette()
    np.testing.assert_array_equal(out[labels == 1], np.broadcast_to(pal[1], out[labels == 1].shape))
    np.testing.assert_array_equal(out[labels == 0], img[labels == 0])
    half = overlay_label_map(img, labels, alpha=0.5, outline_width=1)
    edge = boundary(labels)
    assert edge[10, 19] and edge[10, 20] and not edge[10, 12]  # both sides of the 1|2 border
    np.testing.assert_array_equal(half[10, 19], pal[1])
    np.testing.assert_array_equal(half[10, 20], pal[2])
    with pytest.raises(ValueError, match="shape"):
        overlay_label_map(img, labels[:10])
    with pytest.raises(ValueError, match="300"):
        overlay_label_map(img, np.full((40, 50), 300))


def test_caption_changes_only_the_band():
    img = image(64, 96)
    top = draw_caption(img, "the dog on the left")
    rows = np.any(top != img, axis=(1, 2)).nonzero()[0]
    assert rows.size and rows.min() == 0 and rows.max() < 32
    assert np.array_equal(top[rows.max() + 1:], img[rows.max() + 1:])
    assert (top[rows] > 200).all(axis=-1).any()  # white text is drawn
    bottom = draw_caption(img, "the dog on the left", position="bottom")
    rows = np.any(bottom != img, axis=(1, 2)).nonzero()[0]
    assert rows.max() == 63 and rows.min() > 32 and np.array_equal(bottom[: rows.min()], img[: rows.min()])
    long = draw_caption(img, "a very long sentence " * 30)
    changed = np.any(long != img, axis=(1, 2)).nonzero()[0]
    assert changed.max() < 32  # at most half the height
    with pytest.raises(ValueError, match="position"):
        draw_caption(img, "x", position="left")


def test_prompts_are_drawn_where_asked():
    img = np.zeros((64, 64, 3), np.uint8)
    pts = draw_points(img, [[10, 12], [50, 40], [30, 30]], [1, 0, -1], radius=3)
    assert pts[12, 10, 1] > 150 and pts[12, 10, 0] < 50  # positive: green
    assert pts[40, 50, 0] > 150 and pts[40, 50, 1] < 50  # negative: red
    assert not pts[30, 30].any()  # padding point skipped
    yy, xx = np.nonzero(pts.any(axis=2))
    near = np.minimum(np.hypot(xx - 10, yy - 12), np.hypot(xx - 50, yy - 40))
    assert near.max() <= 4  # nothing drawn away from the two points
    with pytest.raises(ValueError, match="labels"):
        draw_points(img, [[1, 1]], [2])
    boxed = draw_box(img, (8, 10, 40, 30), color=(255, 255, 0), width=1)
    assert boxed[10, 20].tolist() == [255, 255, 0] and boxed[30, 8].tolist() == [255, 255, 0]
    assert not boxed[20, 20].any() and not boxed[0, 0].any()
    with pytest.raises(ValueError, match="x0 <= x1"):
        draw_box(img, (40, 10, 8, 30))


def test_save_overlay(tmp_path):
    img, mask = image(), disk()
    path = save_overlay(tmp_path / "sub" / "o.png", img, mask, caption="a disk")
    with Image.open(path) as im:
        saved = np.asarray(im.convert("RGB"))
    assert saved.shape == img.shape
    np.testing.assert_array_equal(saved[-5:], img[-5:])  # outside mask and caption band
    labels = mask.astype(np.uint8) * 3
    with Image.open(save_overlay(tmp_path / "l.png", img, labels)) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), overlay_label_map(img, labels))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["l.png", "o.png"]


def read_gif(path):
    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)], im.info


def test_gif_has_every_frame(tmp_path):
    frames = [np.full((20, 30, 3), 20 * i, np.uint8) for i in range(7)]
    read, info = read_gif(save_gif(tmp_path / "a.gif", iter(frames), fps=10))
    assert len(read) == 7 and read[0].shape == (20, 30, 3) and info["duration"] == 100
    np.testing.assert_array_equal(read[3], frames[3])  # a few colours survive quantisation exactly
    with pytest.raises(ValueError, match="frame 1"):
        save_gif(tmp_path / "b.gif", [frames[0], np.zeros((5, 5, 3), np.uint8)])
    with pytest.raises(ValueError, match="at least one"):
        save_gif(tmp_path / "c.gif", [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif"]


def test_track_to_gif(tmp_path):
    frames = [image(32, 48, seed=i) for i in range(5)]
    tracks = [disk(32, 48, 16, 10 + 5 * i, 6).astype(np.uint8) * 2 for i in range(5)]
    read, _ = read_gif(track_to_gif(tmp_path / "t.gif", frames, tracks, captions="a moving disk", fps=5))
    assert len(read) == 5 and read[0].shape == (32, 48, 3)
    per_frame = track_to_gif(tmp_path / "p.gif", frames, [t > 0 for t in tracks], captions=["a", None, "c", "d", "e"])
    assert len(read_gif(per_frame)[0]) == 5
    with pytest.raises(ValueError, match="5 frames but 4 label maps"):
        track_to_gif(tmp_path / "x.gif", frames, tracks[:4])
    with pytest.raises(ValueError, match="captions"):
        track_to_gif(tmp_path / "x.gif", frames, tracks, captions=["a"])


def test_make_grid():
    ims = [image(10, 12, seed=i) for i in range(5)] + [np.ones((6, 4), bool)]
    grid = make_grid(ims, ncols=4, pad=2)
    assert grid.shape == (2 * (10 + 2) + 2, 4 * (12 + 2) + 2, 3)
    np.testing.assert_array_equal(grid[2:12, 2:14], ims[0])
    np.testing.assert_array_equal(grid[14:24, 2:14], ims[4])  # row 2, column 1
    assert (grid[14:20, 16:20] == 255).all()  # the bool mask, white
    assert (grid[0:2] == 255).all()  # padding
    assert make_grid(ims[:4]).shape[:2] == (2 * 10 + 3 * 4, 2 * 12 + 3 * 4)  # ceil(sqrt(4)) = 2 columns
    with pytest.raises(ValueError, match="at least one"):
        make_grid([])
    with pytest.raises(TypeError, match="uint8"):
        make_grid([np.zeros((4, 4, 3), np.float32)])


def test_thumbnail_shrinks_only_what_is_too_large(tmp_path):
    from unifusion_sam.visualize import save_png, thumbnail

    big = np.zeros((480, 640, 3), np.uint8)
    big[:, 320:] = 200
    small = thumbnail(big, max_side=320)
    assert small.shape == (240, 320, 3)
    assert small[:, :150].max() == 0 and small[:, 170:].min() == 200  # the left / right halves survive
    little = np.ones((100, 50, 3), np.uint8)
    assert thumbnail(little, max_side=320) is little
    with Image.open(save_png(small, tmp_path / "t.png")) as im:
        assert im.size == (320, 240) and not list(tmp_path.glob("*.tmp"))
