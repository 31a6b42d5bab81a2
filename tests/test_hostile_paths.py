"""Paths that point outside the given folder (issue 34, item 2): symbolic links out of a checkpoint or run
folder, a config naming ``../../etc/passwd``, Hub ids and revisions that climb out of the cache, and dataset
annotation files whose file names are absolute or contain ``..``. Each refused with an error naming the file.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from fixtures_layouts import write_coco, write_davis, write_fss1000, write_jpeg, write_ref_youtube_vos, write_refcoco

import unifusion_sam
from unifusion_sam.checkpoint import check_inside
from unifusion_sam.data.io import DataError, DataWarning
from unifusion_sam.data.readers import DAVIS2017, FSS1000, COCODetection, COCOInstances, RefCOCO, RefYouTubeVOS
from unifusion_sam.data.readers._common import check_relative
from unifusion_sam.encoders.mask import MaskReferenceEncoder
from unifusion_sam.sam import UniFusionSam, build_sam, wrap_sam
from unifusion_sam.sam.builders import save_sam
from unifusion_sam.uniref import build_uniref

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A run folder (adapter + its SAM), an adapter with a frozen text encoder, a UniRef++ folder."""
    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    sam = build_sam("tiny")
    save_sam(sam, root / "run" / "sam_tiny.safetensors")
    wrap_sam(sam, text=None).save_pretrained(root / "run" / "adapter")
    wrap_sam(build_sam("tiny"), text={"trainable": False}).save_pretrained(root / "text-adapter")
    build_uniref("uniref-small", text=None).save_pretrained(root / "uniref")
    return root


def _copy(saved: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved / name, tmp_path / name))


def _move_out_and_link(folder: Path, name: str, outside: Path) -> Path:
    """Move ``folder/name`` to ``outside`` and leave a symbolic link to it (absolute) in its place."""
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(folder / name, outside)
    os.symlink(outside.resolve(), folder / name)
    return folder / name


# ---------------------------------------------------------------------------------------------- checkpoint folders
@pytest.mark.parametrize("kind, name", [("run/adapter", "adapter_model.safetensors"), ("run/adapter", "adapter_config.json"),
                                        ("uniref", "model.safetensors"), ("uniref", "config.json")])
def test_a_symbolic_link_out_of_a_checkpoint_folder_is_refused(saved, tmp_path, kind, name):
    folder = _copy(saved, kind, tmp_path)
    link = _move_out_and_link(folder, name, tmp_path / "elsewhere" / name)
    load = (lambda: unifusion_sam.from_pretrained(folder)) if kind == "uniref" else \
        (lambda: UniFusionSam.from_pretrained(folder, sam=build_sam("tiny")))
    with pytest.raises(ValueError, match="outside the .* folder") as info:
        load()
    assert str(link) in str(info.value) and str(tmp_path / "elsewhere" / name) in str(info.value)


def test_a_link_that_stays_inside_the_folder_is_followed(saved, tmp_path):
    folder = _copy(saved, "run/adapter", tmp_path)
    (folder / "weights").mkdir()
    shutil.move(folder / "adapter_model.safetensors", folder / "weights" / "w.safetensors")
    os.symlink("weights/w.safetensors", folder / "adapter_model.safetensors")
    assert isinstance(UniFusionSam.from_pretrained(folder, sam=build_sam("tiny")), UniFusionSam)


def _hf_cache(saved: Path, cache: Path, repo: str, source: str) -> Path:
    """The Hugging Face cache's own layout: ``snapshots/<commit>/<file>`` are relative links to ``blobs/``."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "blobs").mkdir(parents=True)
    (folder / "snapshots" / COMMIT).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    for i, p in enumerate(sorted((saved / source).iterdir())):
        shutil.copy(p, folder / "blobs" / f"blob{i}")
        os.symlink(f"../../blobs/blob{i}", folder / "snapshots" / COMMIT / p.name)
    return folder / "snapshots" / COMMIT


def test_the_hf_cache_links_to_its_blobs_are_followed(saved, tmp_path):
    snapshot = _hf_cache(saved, tmp_path / "hub", "me/tiny-adapter", "run/adapter")
    sam = build_sam("tiny")
    by_id = UniFusionSam.from_pretrained("me/tiny-adapter", sam=sam, cache_dir=tmp_path / "hub")
    by_path = UniFusionSam.from_pretrained(snapshot, sam=build_sam("tiny"))
    assert torch.equal(by_id.adapter_state_dict()["fusion.q_proj.weight"],
                       by_path.adapter_state_dict()["fusion.q_proj.weight"])


def test_a_hub_id_or_revision_that_climbs_out_of_the_cache_is_refused(saved, tmp_path):
    cache = tmp_path / "hub"
    _hf_cache(saved, cache, "me/tiny-adapter", "run/adapter")
    shutil.copytree(saved / "run" / "adapter", cache / "outside")  # where "../../outside" would lead
    for source, revision in [("me/..", None), ("me/tiny-adapter", "../../outside"),
                             ("me/tiny-adapter", f"{COMMIT}/../../../outside")]:
        with pytest.raises(FileNotFoundError, match="Hub") as info:
            unifusion_sam.from_pretrained(source, revision=revision, sam=build_sam("tiny"), cache_dir=cache)
        assert repr(source) in str(info.value)


def test_check_inside_names_both_paths(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "secret").write_text("x")
    os.symlink("../secret", tmp_path / "ckpt" / "f")
    with pytest.raises(ValueError, match=r"f resolves to .*secret, outside the checkpoint folder .*ckpt"):
        check_inside(tmp_path / "ckpt" / "f", tmp_path / "ckpt")
    assert check_inside(tmp_path / "ckpt", tmp_path / "ckpt") == tmp_path / "ckpt"


# ---------------------------------------------------------------------------------------------- run folders
def test_a_run_folder_whose_sam_weights_link_out_of_it_is_refused(saved, tmp_path):
    run = _copy(saved, "run", tmp_path)
    assert isinstance(unifusion_sam.from_pretrained(run), UniFusionSam)  # the control: it loads as it is
    link = _move_out_and_link(run, "sam_tiny.safetensors", tmp_path / "elsewhere" / "sam_tiny.safetensors")
    with pytest.raises(ValueError, match="outside the run folder") as info:
        unifusion_sam.from_pretrained(run)
    assert str(link) in str(info.value)


def test_a_run_folder_whose_adapter_links_out_of_it_is_refused(saved, tmp_path):
    run = _copy(saved, "run", tmp_path)
    _move_out_and_link(run, "adapter", tmp_path / "elsewhere" / "adapter")
    with pytest.raises(ValueError, match="outside the run folder"):
        unifusion_sam.from_pretrained(run)


# ---------------------------------------------------------------------------------------------- names in configs
def test_a_config_naming_a_text_model_outside_is_refused_before_reading_it(saved, tmp_path):
    folder = _copy(saved, "text-adapter", tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    for name in ("../../etc/passwd", "models/../../../etc", "..\\..\\secrets"):
        config["text"]["model_name_or_path"] = name
        (folder / "adapter_config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match="climbs out of its folder") as info:
            UniFusionSam.from_pretrained(folder, sam=build_sam("tiny"))
        assert str(folder / "adapter_config.json") in str(info.value) and repr(name) in str(info.value)


def test_a_uniref_config_naming_a_text_model_outside_is_refused(saved, tmp_path):
    folder = _copy(saved, "uniref", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["text"] = {"model_name_or_path": "../../etc/passwd", "dim": config["hidden_dim"]}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"text.model_name_or_path = '../../etc/passwd' climbs out"):
        unifusion_sam.from_pretrained(folder)


def test_a_text_model_that_cannot_be_loaded_is_named(saved, tmp_path):
    """A name that is neither a cached Hub id nor a model folder: a clear error naming it (before: an OSError
    or a ValueError from inside transformers that did not)."""
    folder = _copy(saved, "text-adapter", tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    for name, error in (("nobody/no-such-model", FileNotFoundError), (str(tmp_path), ValueError)):
        config["text"]["model_name_or_path"] = name
        (folder / "adapter_config.json").write_text(json.dumps(config))
        with pytest.raises(error, match=f"cannot load the text encoder {name!r}"):
            UniFusionSam.from_pretrained(folder, sam=build_sam("tiny"))


def test_a_weights_path_in_a_saved_config_is_never_read(saved, tmp_path, monkeypatch):
    folder = _copy(saved, "run/adapter", tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["mask"]["pretrained_path"] = "../../etc/passwd"
    (folder / "adapter_config.json").write_text(json.dumps(config))

    def forbidden(self, path):
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(MaskReferenceEncoder, "load_resnet_weights", forbidden)
    model = UniFusionSam.from_pretrained(folder, sam=build_sam("tiny"))
    assert model.config.mask.pretrained_path == "../../etc/passwd"  # kept as written, not followed


# ---------------------------------------------------------------------------------------------- dataset readers
@pytest.mark.parametrize("name", ["../secret.jpg", "a/../../secret.jpg", "/etc/passwd", "..\\secret.jpg",
                                  "C:\\secret.jpg", "", "x\0.jpg"])
def test_check_relative_refuses_names_that_leave_the_folder(name):
    with pytest.raises(DataError, match="somewhere"):
        check_relative(name, "somewhere")


@pytest.mark.parametrize("name", ["a.jpg", "train2014/a.jpg", "./a.jpg", "a..b.jpg", "...jpg"])
def test_check_relative_accepts_names_below_the_folder(name):
    assert check_relative(name, "somewhere") == name


def _secret_image(tmp_path: Path) -> Path:
    """An image outside every dataset root: what a hostile annotation file points at."""
    return write_jpeg(tmp_path / "secret.jpg", (10, 14))


@pytest.mark.parametrize("reader", ["instances", "detection"])
def test_a_coco_file_name_outside_the_image_folder_is_refused(tmp_path, reader):
    root = tmp_path / "coco"
    coco = write_coco(root, "val2017")
    secret = _secret_image(tmp_path)
    make = {"instances": COCOInstances, "detection": COCODetection}[reader]
    data = json.loads(coco["annotation_file"].read_text())
    for name in ("../../secret.jpg", str(secret)):  # before: read tmp_path/secret.jpg
        data["images"][0]["file_name"] = name
        coco["annotation_file"].write_text(json.dumps(data))
        with pytest.raises(DataError, match="climbs out of its folder") as info:
            make(root, "val2017")
        assert str(coco["annotation_file"]) in str(info.value) and repr(name) in str(info.value)
        with pytest.warns(DataWarning, match="climbs out"):
            kept = make(root, "val2017", on_error="skip")
        assert all(Path(r.image).resolve() != secret.resolve() for r in kept)


def test_a_refcoco_file_name_outside_the_image_folder_is_refused(tmp_path):
    root = tmp_path / "refer"
    ref = write_refcoco(root)
    data = json.loads(ref["instances_path"].read_text())
    data["images"][0]["file_name"] = "../../../../../secret.jpg"
    ref["instances_path"].write_text(json.dumps(data))
    with pytest.raises(DataError, match="climbs out of its folder") as info:
        RefCOCO(root, "refcoco", "train")
    assert str(ref["instances_path"]) in str(info.value)


def test_a_video_name_outside_the_davis_folder_is_refused(tmp_path):
    write_davis(tmp_path / "DAVIS")
    for t in range(2):  # a video folder beside the dataset, reachable by ../../../secret-video
        write_jpeg(tmp_path / "secret-video" / f"{t:05d}.jpg", (8, 12))
    (tmp_path / "DAVIS" / "ImageSets" / "2017" / "val.txt").write_text("dogs-jump\n../../../secret-video\n")
    with pytest.raises(DataError, match="'../../../secret-video' is absolute or climbs out"):
        DAVIS2017(tmp_path / "DAVIS", "val")
    with pytest.warns(DataWarning, match="secret-video"):
        assert DAVIS2017(tmp_path / "DAVIS", "val", on_error="skip").videos[0] == "dogs-jump"


def test_a_video_name_outside_the_ref_youtube_vos_folder_is_refused(tmp_path):
    write_ref_youtube_vos(tmp_path)
    path = tmp_path / "meta_expressions" / "valid" / "meta_expressions.json"
    data = json.loads(path.read_text())
    data["videos"]["../../secret"] = data["videos"]["va"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="'../../secret' is absolute or climbs out") as info:
        RefYouTubeVOS(tmp_path, "valid")
    assert str(path) in str(info.value)


def test_a_class_name_outside_the_fss1000_folder_is_refused(tmp_path):
    write_fss1000(tmp_path / "fss")
    write_fss1000(tmp_path / "secret", classes=("cat",))  # tmp_path/secret/cat: reachable as ../secret/cat
    split = tmp_path / "split.txt"
    split.write_text("bus\n../secret/cat\n")
    with pytest.raises(DataError, match="'../secret/cat' is absolute or climbs out"):
        FSS1000(tmp_path / "fss", "test", split_file=split)


# ---------------------------------------------------------------------------------------------- UniRef++ text files
@pytest.fixture(scope="module")
def uniref_with_text(tmp_path_factory, text_encoder_parts):
    """A UniRef++ folder with its text encoder's configuration and tokenizer files beside the weights."""
    from unifusion_sam.encoders.text import TextReferenceEncoder
    from unifusion_sam.uniref import load_uniref_preset

    config = load_uniref_preset("uniref-small")
    tokenizer, backbone = text_encoder_parts
    text = TextReferenceEncoder(config.text, backbone=copy.deepcopy(backbone), tokenizer=tokenizer)
    folder = tmp_path_factory.mktemp("uniref-text") / "model"
    build_uniref(config, text_encoder=text).save_pretrained(folder)
    return folder


def test_a_tokenizer_file_linking_out_of_a_uniref_folder_is_refused(uniref_with_text, tmp_path):
    folder = Path(shutil.copytree(uniref_with_text, tmp_path / "model"))
    name = next(n for n in ("vocab.txt", "tokenizer.json") if (folder / n).is_file())
    link = _move_out_and_link(folder, name, tmp_path / "elsewhere" / name)
    with pytest.raises(ValueError, match="outside the UniRef\\+\\+ checkpoint folder") as info:
        unifusion_sam.from_pretrained(folder)
    assert str(link) in str(info.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"no_model_type": 1}'])
def test_a_broken_text_encoder_config_is_named(uniref_with_text, tmp_path, text):
    folder = Path(shutil.copytree(uniref_with_text, tmp_path / "model"))
    (folder / "text_encoder_config.json").write_text(text)
    with pytest.raises(ValueError, match="invalid text encoder configuration") as info:
        unifusion_sam.from_pretrained(folder)
    assert str(folder / "text_encoder_config.json") in str(info.value)
