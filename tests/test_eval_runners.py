"""eval/evaluate_{vos,ris,fss}.py and unifusion_sam.evaluation on tiny official-layout fixtures and the tiny SAM.

The model is the tiny random SAM with an untrained adapter saved by ``save_pretrained`` and loaded back
with ``--checkpoint <dir> --sam tiny --seed 0``, so that a run and a direct recomputation see the same weights.
"""

import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import PartialState
from fixtures_layouts import (
    write_davis,
    write_fss1000,
    write_ref_davis,
    write_ref_youtube_vos,
    write_refcoco,
    write_youtube_vos,
)
from PIL import Image

from unifusion_sam.data.io import DataError, load_rgb
from unifusion_sam.data.readers import FSS1000, RefCOCO
from unifusion_sam.evaluation import (
    check_text_option,
    evaluate_fss,
    evaluate_video_benchmark,
    run_ris,
    score_video_results,
)
from unifusion_sam.evaluation.ris import ris_meter
from unifusion_sam.loading import load_model
from unifusion_sam.metrics import FSSMeter, RISMeter, score_davis_results
from unifusion_sam.metrics.davis import SUMMARY_KEYS

REPO = Path(__file__).resolve().parents[1]
DAVIS_VIDEOS = {  # three val videos so that two processes get an uneven split
    "alpha": {"split": "val", "frames": 3, "objects": {1: 0}},
    "beta": {"split": "val", "frames": 4, "objects": {1: 0, 2: 0}},
    "gamma": {"split": "val", "frames": 3, "objects": {1: 0, 2: 0}},
}
SIZE = (16, 20)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeState:
    """The part of ``accelerate.PartialState`` the runners use, as process ``index`` of ``n``; the split is
    accelerate's own ``split_between_processes`` code."""

    def __init__(self, n: int, index: int) -> None:
        self.num_processes, self.process_index = n, index
        self.is_main_process = index == 0
        self.device = torch.device("cpu")

    def split_between_processes(self, items, apply_padding=False):
        return PartialState.split_between_processes(self, items, apply_padding)

    def wait_for_everyone(self) -> None:
        pass


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead (and contention on shared CI cores)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("adapter") / "untrained-tiny"
    load_model("none", sam="tiny", seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(adapter_dir):
    return load_model(str(adapter_dir), sam="tiny", seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_davis(root / "DAVIS", videos=DAVIS_VIDEOS, size=SIZE)
    write_ref_davis(root / "ref-davis")
    write_youtube_vos(root / "ytvos", all_frames=False)
    write_ref_youtube_vos(root / "ref-ytvos")
    write_refcoco(root / "refer")
    write_fss1000(root / "fss", images_per_class=4)
    return root


@pytest.fixture()
def model_args(adapter_dir):
    return ["--checkpoint", str(adapter_dir), "--sam", "tiny", "--seed", "0", "--device", "cpu", "--no-progress",
            "--quiet"]


def _check_fractions(summary: dict) -> None:
    for key in SUMMARY_KEYS:
        low = -1.0 if key.endswith("Decay") else 0.0
        assert low <= summary[key] <= 1.0, (key, summary[key])


# ----------------------------------------------------------------------------------------- VOS
def test_davis_run_writes_every_frame_and_scores(data, tmp_path, model_args):
    results, out = tmp_path / "davis_val", tmp_path / "davis.json"
    rc = _script("evaluate_vos").main(["--benchmark", "davis2017", "--root", str(data / "DAVIS"), "--results",
                                       str(results), "--out", str(out), "--sigma", "-10", *model_args])
    assert rc == 0
    summary = json.loads(out.read_text())
    _check_fractions(summary)
    assert summary["scored"] is True and summary["num_videos"] == 3 and summary["num_objects"] == 5
    assert summary["sigma"] == -10 and summary["checkpoint"].endswith("untrained-tiny")
    assert set(summary["per_object"]) == {"alpha_1", "beta_1", "beta_2", "gamma_1", "gamma_2"}
    gt_root = data / "DAVIS" / "Annotations" / "480p"
    for video, spec in DAVIS_VIDEOS.items():
        gt_palette = Image.open(gt_root / video / "00000.png").getpalette()
        for t in range(spec["frames"]):
            im = Image.open(results / video / f"{t:05d}.png")
            assert im.mode == "P" and im.size == (SIZE[1], SIZE[0])
            assert im.getpalette() == gt_palette
            assert set(np.unique(np.asarray(im))) <= {0, *spec["objects"]}
        first = np.asarray(Image.open(results / video / "00000.png"))  # the given masks come back on frame 0
        assert np.array_equal(first, np.asarray(Image.open(gt_root / video / "00000.png")))
    # the official folder scorer reads the same numbers from the written PNGs
    official = score_davis_results(data / "DAVIS", results, progress=False)
    for key in SUMMARY_KEYS:
        assert summary[key] == pytest.approx(official[key], abs=1e-12)


def test_ref_davis_run_scores_four_expression_sets(data, tmp_path, model_args):
    results, out = tmp_path / "ref_davis", tmp_path / "ref_davis.json"
    rc = _script("evaluate_vos").main(["--benchmark", "ref_davis17", "--root", str(data / "ref-davis"), "--results",
                                       str(results), "--out", str(out), *model_args])
    assert rc == 0
    summary = json.loads(out.read_text())
    _check_fractions(summary)
    assert summary["sigma"] == 0.3 and set(summary["per_annotation"]) == {"anno_0", "anno_1", "anno_2", "anno_3"}
    for k in range(4):
        _check_fractions(summary["per_annotation"][f"anno_{k}"])
        assert sorted(p.name for p in (results / f"anno_{k}" / "classic-car").iterdir()) == [
            "00000.png", "00001.png", "00002.png"]
    # scoring the written folders again (no model) gives the same numbers
    again = score_video_results("ref_davis17", data / "ref-davis", results, state=FakeState(1, 0), progress=False)
    assert again["J&F-Mean"] == pytest.approx(summary["J&F-Mean"], abs=1e-12)
    mean = np.mean([s["J&F-Mean"] for s in summary["per_annotation"].values()])
    assert summary["J&F-Mean"] == pytest.approx(mean)


def test_youtube_vos_valid_gets_a_submission_zip(data, tmp_path, model_args, capsys):
    results, out = tmp_path / "yt", tmp_path / "yt.json"
    rc = _script("evaluate_vos").main(["--benchmark", "youtube_vos", "--root", str(data / "ytvos"), "--results",
                                       str(results), "--out", str(out), *model_args[:-1]])
    assert rc == 0
    summary = json.loads(out.read_text())
    assert summary["scored"] is False and summary["sigma"] == 0.4
    assert "no public ground truth" in summary["note"] and "no public ground truth" in capsys.readouterr().out
    names = zipfile.ZipFile(summary["submission_zip"]).namelist()
    frames = {"a": ["00000", "00005", "00010"], "b": ["00000", "00005", "00010", "00015"]}
    assert {n for n in names if n.endswith(".png")} == {f"Annotations/{v}/{f}.png" for v, fs in frames.items() for f in fs}
    # object 2 of video b first appears in frame 00010: it joins there with its given mask
    given = np.asarray(Image.open(data / "ytvos" / "valid" / "Annotations" / "b" / "00010.png"))
    written = np.asarray(Image.open(results / "b" / "00010.png"))
    assert np.array_equal(written == 2, given == 2) and (given == 2).any()
    assert not (np.asarray(Image.open(results / "b" / "00005.png")) == 2).any()


def test_ref_youtube_vos_writes_expression_layout(data, tmp_path, model_args):
    results, out = tmp_path / "ryt", tmp_path / "ryt.json"
    rc = _script("evaluate_vos").main(["--benchmark", "ref_youtube_vos", "--root", str(data / "ref-ytvos"),
                                       "--results", str(results), "--out", str(out), *model_args])
    assert rc == 0
    summary = json.loads(out.read_text())
    assert summary["scored"] is False and summary["videos"] == ["va"]  # the test video vt is excluded
    names = {n for n in zipfile.ZipFile(summary["submission_zip"]).namelist() if n.endswith(".png")}
    assert names == {f"Annotations/va/{e}/{f}.png" for e in "01" for f in ("00000", "00005", "00010")}
    im = Image.open(results / "Annotations" / "va" / "1" / "00005.png")
    assert im.mode == "L" and set(np.unique(np.asarray(im))) <= {0, 255}


def test_mose_and_lvos_through_the_library(data, tmp_path, model):
    from fixtures_layouts import write_lvos, write_mose

    write_mose(tmp_path / "mose")
    write_lvos(tmp_path / "lvos")
    mose = evaluate_video_benchmark(model, "mose", tmp_path / "mose", tmp_path / "r_mose", state=FakeState(1, 0),
                                    progress=False)
    assert mose["sigma"] == 0.4 and mose["num_written"] == 5
    assert "m1/00002.png" in zipfile.ZipFile(mose["submission_zip"]).namelist()  # DAVIS layout: videos at the top
    lvos = evaluate_video_benchmark(model, "lvos", tmp_path / "lvos", tmp_path / "r_lvos", state=FakeState(1, 0),
                                    progress=False)
    assert lvos["sigma"] == 0.5
    assert "Annotations/l1/00000016.png" in zipfile.ZipFile(lvos["submission_zip"]).namelist()


# ----------------------------------------------------------------------------------------- RIS / FSS
def test_ris_run_equals_direct_recomputation(data, tmp_path, model_args, model):
    out = tmp_path / "ris.json"
    rc = _script("evaluate_ris").main(["--benchmark", "refcoco", "--split", "train", "--root", str(data / "refer"),
                                       "--out", str(out), *model_args])
    assert rc == 0
    summary = json.loads(out.read_text())
    for key in ("oIoU", "mIoU", "Prec@0.5", "Prec@0.6", "Prec@0.7", "Prec@0.8", "Prec@0.9"):
        assert 0.0 <= summary[key] <= 1.0
    meter = RISMeter()
    for record in RefCOCO(data / "refer", "refcoco", "train"):
        meter.update(model.predict(load_rgb(record.image), text=record.sentence).mask, record.mask)
    direct = meter.compute()
    assert direct["num_sentences"] == summary["num_sentences"] == 2
    for key, value in direct.items():
        assert summary[key] == value, key


def test_fss_run_equals_direct_recomputation(data, tmp_path, model_args, model):
    out = tmp_path / "fss.json"
    rc = _script("evaluate_fss").main(["--root", str(data / "fss"), "--shot", "1", "--split", "all",
                                       "--episodes-per-class", "2", "--out", str(out), *model_args])
    assert rc == 0
    summary = json.loads(out.read_text())
    assert 0.0 <= summary["mIoU"] <= 1.0 and 0.0 <= summary["FB-IoU"] <= 1.0
    meter = FSSMeter()
    for ep in FSS1000(data / "fss", "all", shot=1, episodes_per_class=2, seed=0):
        pred = model.predict(load_rgb(ep.query_image), ref_images=[load_rgb(p) for p in ep.support_images],
                             ref_masks=ep.support_masks)
        meter.update(pred.mask, ep.query_mask, ep.class_name)
    direct = meter.compute()
    assert summary["mIoU"] == direct["mIoU"] and summary["FB-IoU"] == direct["FB-IoU"]
    assert summary["per_class_iou"] == direct["per_class_iou"] and summary["num_episodes"] == 6


def test_fss_five_shot(data, model):
    summary = evaluate_fss(model, data / "fss", shot=3, split="all", episodes_per_class=1,
                           state=FakeState(1, 0), progress=False)
    assert summary["shot"] == 3 and summary["num_episodes"] == 3 and 0.0 <= summary["mIoU"] <= 1.0


# ----------------------------------------------------------------------------------------- bad input
def test_text_for_a_vos_benchmark_is_a_clear_error(data, tmp_path, model_args, capsys):
    rc = _script("evaluate_vos").main(["--benchmark", "davis2017", "--root", str(data / "DAVIS"), "--results",
                                       str(tmp_path / "r"), "--out", str(tmp_path / "o.json"), "--text", "a dog",
                                       *model_args])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--text" in err and "semi-supervised" in err and "first-frame masks" in err
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="semi-supervised VOS"):
        check_text_option("youtube_vos", "a dog")
    check_text_option("youtube_vos", None)


@pytest.mark.parametrize("script", ["evaluate_vos", "evaluate_ris", "evaluate_fss"])
def test_missing_root_names_the_path(script, tmp_path, model_args, capsys):
    missing = tmp_path / "no" / "such-root"
    args = {"evaluate_vos": ["--benchmark", "davis2017", "--results", str(tmp_path / "r")],
            "evaluate_ris": ["--benchmark", "refcoco", "--split", "val"],
            "evaluate_fss": []}[script]
    rc = _script(script).main([*args, "--root", str(missing), "--out", str(tmp_path / "o.json"), *model_args])
    assert rc == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_model_loading_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        load_model(str(tmp_path / "nothing" / "here"), sam="tiny")
    assert str(tmp_path / "nothing" / "here") in str(info.value)
    with pytest.raises(DataError, match="SAM checkpoint not found"):
        load_model("none", sam=str(tmp_path / "sam_vit_b.pth"))
    with pytest.raises(ValueError, match="disagree"):
        load_model("none", sam="tiny", sam_size="vit_b")


def test_sam_weights_path_infers_the_size(tmp_path):
    from unifusion_sam.sam import build_sam

    torch.manual_seed(3)
    sam = build_sam("tiny", image_size=128)
    torch.save(sam.state_dict(), tmp_path / "tiny.pth")
    model = load_model("none", sam=str(tmp_path / "tiny.pth"))
    assert model.config.sam_size == "tiny" and model.image_size == 128
    assert torch.equal(model.sam.image_encoder.pos_embed, sam.image_encoder.pos_embed)


# ----------------------------------------------------------------------------------------- accelerate split
def test_two_processes_partition_videos_and_gather_the_same_scores(data, tmp_path, model):
    root = data / "DAVIS"
    kwargs = dict(sigma=-10.0, progress=False)
    single = evaluate_video_benchmark(model, "davis2017", root, tmp_path / "one", state=FakeState(1, 0), **kwargs)

    seen = {}

    def gather_on(index, others):
        def gather(local):
            seen[index] = [o.video for o in local]
            return local + others
        return gather

    off_main = []
    # process 1 runs first; its gathered outcomes are what the main process later receives from it
    assert evaluate_video_benchmark(model, "davis2017", root, tmp_path / "two", state=FakeState(2, 1),
                                    gather=lambda local: off_main.extend(local) or local, **kwargs) is None
    merged = evaluate_video_benchmark(model, "davis2017", root, tmp_path / "two", state=FakeState(2, 0),
                                      gather=gather_on(0, off_main), **kwargs)
    assert seen[0] == ["alpha", "beta"] and [o.video for o in off_main] == ["gamma"]
    assert merged["videos"] == single["videos"] == ["alpha", "beta", "gamma"]
    for key in (*SUMMARY_KEYS, "per_object", "num_objects", "num_frames", "num_written"):
        assert merged[key] == single[key], key
    for png in sorted((tmp_path / "one").rglob("*.png")):
        other = tmp_path / "two" / png.relative_to(tmp_path / "one")
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(other)))


def test_two_processes_split_ris_sentences(data, model):
    reader = RefCOCO(data / "refer", "refcoco", "train")
    single = run_ris(model, reader, state=FakeState(1, 0), progress=False)
    off_main = []
    assert run_ris(model, reader, state=FakeState(2, 1), gather=lambda local: off_main.extend(local) or local,
                   progress=False) is None
    merged = run_ris(model, reader, state=FakeState(2, 0), gather=lambda local: local + off_main, progress=False)
    assert [o.index for o in merged] == [0, 1] and [o.index for o in off_main] == [1]
    assert ris_meter(merged).compute() == ris_meter(single).compute()


def test_unsupervised_protocol_matches_proposals_to_objects(tmp_path):
    from unifusion_sam.data.io import save_palette_png
    from unifusion_sam.evaluation import score_unsupervised_video

    gt_dir, res_dir = tmp_path / "gt", tmp_path / "res"
    frames = []
    for t in range(3):
        gt = np.zeros((12, 16), dtype=np.uint8)
        gt[1:5, 1 + t:6 + t] = 1
        gt[7:11, 8:14] = 2
        save_palette_png(gt_dir / f"{t:05d}.png", gt)
        res = np.zeros_like(gt)
        res[gt == 1] = 3  # the proposals carry other ids than the objects (and one spare id, 1, is unused)
        res[gt == 2] = 2
        save_palette_png(res_dir / f"{t:05d}.png", res)
        frames.append(gt_dir / f"{t:05d}.png")
    objects = score_unsupervised_video("v", frames, res_dir)
    assert [o.object_id for o in objects] == [1, 2]
    assert all(np.array_equal(o.j, np.ones(3)) and np.array_equal(o.f, np.ones(3)) for o in objects)
    save_palette_png(res_dir / "00001.png", np.zeros((12, 16), dtype=np.uint8))  # every object lost on frame 1
    objects = score_unsupervised_video("v", frames, res_dir)
    assert [o.j.tolist() for o in objects] == [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
    (res_dir / "00002.png").unlink()
    with pytest.raises(DataError, match="missing result frame"):
        score_unsupervised_video("v", frames, res_dir)


# ----------------------------------------------------------------------------------------- the full UniRef++
def test_runners_take_a_full_uniref_model_without_sam(data, tmp_path):
    """A saved UniRef++ folder is a --checkpoint of its own: DAVIS and RIS run through the same runners."""
    uniref_dir = tmp_path / "uniref-small"
    load_model("none", preset="uniref-small", seed=0).save_pretrained(uniref_dir)
    args = ["--checkpoint", str(uniref_dir), "--seed", "0", "--device", "cpu", "--no-progress", "--quiet"]
    rc = _script("evaluate_vos").main(["--benchmark", "davis2017", "--root", str(data / "DAVIS"), "--results",
                                       str(tmp_path / "res"), "--out", str(tmp_path / "davis.json"), *args])
    assert rc == 0
    summary = json.loads((tmp_path / "davis.json").read_text())
    assert summary["scored"] is True and summary["num_objects"] == 5
    rc = _script("evaluate_ris").main(["--benchmark", "refcoco", "--split", "train", "--root", str(data / "refer"),
                                       "--out", str(tmp_path / "ris.json"), *args])
    assert rc == 0 and json.loads((tmp_path / "ris.json").read_text())["num_sentences"] == 2
    with pytest.raises(ValueError, match="full UniRef\\+\\+ model"):
        load_model(str(uniref_dir), sam="tiny")
