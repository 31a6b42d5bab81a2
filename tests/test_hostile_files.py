"""Hostile weight files (issue 34, item 2): pickles that would run code, safetensors headers that lie, dtypes and
shapes that do not fit. Each is refused with a ``ValueError`` naming the file, before anything is built from it.

Targets: an adapter folder (``UniFusionSam.from_pretrained`` and ``unifusion_sam.from_pretrained``), a full
UniRef++ folder, SAM weights (``build_sam("tiny", checkpoint=...)``) and the authors' UniRef++ checkpoint
(``convert_authors_checkpoint`` / ``unifusion-sam convert-uniref``).
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import unifusion_sam
from unifusion_sam.cli import main
from unifusion_sam.sam import UniFusionSam, build_sam, wrap_sam
from unifusion_sam.sam.builders import save_sam
from unifusion_sam.sam.builders.options import build_sam_from_option
from unifusion_sam.uniref import build_uniref
from unifusion_sam.uniref.convert import convert_authors_checkpoint, read_authors_checkpoint


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One adapter folder, one UniRef++ folder (no text encoder) and one SAM weights file, written once."""
    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    sam = build_sam("tiny")
    save_sam(sam, root / "sam_tiny.safetensors")
    wrap_sam(sam, text=None).save_pretrained(root / "adapter")
    build_uniref("uniref-small", text=None).save_pretrained(root / "uniref")
    return root


def _load_adapter(folder: Path):
    return UniFusionSam.from_pretrained(folder, sam=build_sam("tiny"))


TARGETS = {  # name: (what is copied, weights file name, how it is loaded)
    "adapter": ("adapter", "adapter_model.safetensors", _load_adapter),
    "adapter-any-family": ("adapter", "adapter_model.safetensors",
                           lambda f: unifusion_sam.from_pretrained(f, sam=build_sam("tiny"))),
    "uniref": ("uniref", "model.safetensors", lambda f: unifusion_sam.from_pretrained(f)),
    "sam": (None, "sam_tiny.safetensors", lambda f: build_sam("tiny", checkpoint=f / "sam_tiny.safetensors")),
    "authors-safetensors": (None, "authors.safetensors", lambda f: read_authors_checkpoint(f / "authors.safetensors")),
}


def _target(saved: Path, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """``(folder, weights path)``: a copy of the saved folder's config files (its weights are then replaced)."""
    source, weights_name, _ = TARGETS[name]
    folder = tmp_path / "target"
    folder.mkdir()
    if source is not None:
        for p in (saved / source).iterdir():
            if not p.name.endswith(".safetensors"):
                shutil.copy(p, folder / p.name)
    return folder, folder / weights_name


def _original(saved: Path, name: str) -> Path:
    source, weights_name, _ = TARGETS[name]
    return saved / source / weights_name if source else saved / "sam_tiny.safetensors"


def craft(path: Path, header, data: bytes = b"", length: int | None = None) -> Path:
    """A safetensors file by hand: 8-byte little-endian header length, the JSON header, the data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _f32(shape, start=0, end=None):
    n = 4 * int(torch.tensor(shape).prod()) if end is None else end - start
    return {"dtype": "F32", "shape": list(shape), "data_offsets": [start, start + n if end is None else end]}


LIES = {  # name: (header, data, header length written); safetensors' own checks + ours, all named by file
    "header length larger than the file": ({"w": _f32([1])}, b"\0" * 4, 10**6),
    "header length 2**63": ({"w": _f32([1])}, b"\0" * 4, 2**63),
    "header not JSON": (b"{'w': not json}", b"", None),
    "header a JSON list": (b"[1, 2, 3]", b"", None),
    "size lies: 4 floats in 8 bytes": ({"w": _f32([4], 0, 8)}, b"\0" * 8, None),
    "offset past the end": ({"w": _f32([4])}, b"\0" * 8, None),
    "overlapping tensors": ({"a": _f32([2]), "b": _f32([2])}, b"\0" * 8, None),
    "gap before the data": ({"w": _f32([1], 4, 8)}, b"\0" * 8, None),
    "unknown dtype": ({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None),
    "negative shape": ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, None),
    "shape overflows": ({"w": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 8]}}, b"\0" * 8, None),
    "bytes after the last tensor": ({"w": _f32([1])}, b"\0" * 12, None),
    "metadata not strings": ({"__metadata__": {"format": 1}, "w": _f32([1])}, b"\0" * 4, None),
    "truncated to 3 bytes": (None, b"", None),
}


# ---------------------------------------------------------------------------------------------- safetensors
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("lie", list(LIES))
def test_a_safetensors_header_that_lies_is_refused_naming_the_file(saved, tmp_path, target, lie):
    folder, weights = _target(saved, tmp_path, target)
    header, data, length = LIES[lie]
    if header is None:
        weights.write_bytes(b"\x10\x00\x00")
    else:
        craft(weights, header, data, length)
    with pytest.raises(ValueError, match="not a valid safetensors file") as info:
        TARGETS[target][2](folder)
    assert str(weights) in str(info.value)


def _lying_dtype(src: Path, dst: Path) -> str:
    """``dst``: ``src`` with one float32 tensor declared int32 (the same bytes: a header safetensors accepts)."""
    with safe_open(str(src), "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key = sorted(k for k, v in tensors.items() if v.dtype == torch.float32 and v.dim() == 1)[0]
    tensors[key] = tensors[key].view(torch.int32)
    save_file(tensors, str(dst), metadata=metadata)
    return key


@pytest.mark.parametrize("target", ["adapter", "uniref", "sam"])
def test_a_dtype_that_lies_is_refused_naming_the_key(saved, tmp_path, target):
    """safetensors accepts a float32 tensor declared int32 (sizes agree); loading it would cast bit patterns
    into numbers they never were (before: accepted silently)."""
    folder, weights = _target(saved, tmp_path, target)
    key = _lying_dtype(_original(saved, target), weights)
    with pytest.raises(ValueError, match=r"dtype mismatches \(1\)") as info:
        TARGETS[target][2](folder)
    assert f"{key}: checkpoint int32 vs model float32" in str(info.value)
    assert str(weights) in str(info.value)


@pytest.mark.parametrize("target", ["adapter", "uniref", "sam"])
def test_a_tensor_shape_that_does_not_fit_the_model_is_refused(saved, tmp_path, target):
    folder, weights = _target(saved, tmp_path, target)
    with safe_open(str(_original(saved, target)), "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key = sorted(k for k, v in tensors.items() if v.dtype == torch.float32 and v.dim() == 1)[0]
    tensors[key] = torch.zeros(3)
    save_file(tensors, str(weights), metadata=metadata)
    with pytest.raises(ValueError, match=r"shape mismatches \(1\)") as info:
        TARGETS[target][2](folder)
    assert f"{key}: checkpoint (3,) vs model" in str(info.value)
    assert str(weights) in str(info.value)


def test_half_precision_weights_still_load(saved, tmp_path):
    """The dtype check compares kinds: a float16 copy of float32 weights is a legitimate checkpoint."""
    folder, weights = _target(saved, tmp_path, "adapter")
    with safe_open(str(_original(saved, "adapter")), "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(weights), metadata=metadata)
    model = _load_adapter(folder)
    key = next(k for k, v in tensors.items() if v.is_floating_point() and v.abs().sum() > 0)
    assert torch.equal(model.adapter_state_dict()[key], tensors[key].half().float())


# ---------------------------------------------------------------------------------------------- pickles
class RunsCommand:
    """Unpickling this runs ``touch <marker>``: what a hostile checkpoint would do with a worse command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _write_payload(path: Path, layout: str, marker: Path) -> None:
    payload = RunsCommand(marker)
    if layout == "torch-zip":  # detectron2's layout, the payload among the tensors
        torch.save({"model": {"w": torch.zeros(2), "evil": payload}, "iteration": 1}, path)
    elif layout == "torch-zip-top-level":
        torch.save(payload, path)
    elif layout == "torch-legacy":
        torch.save({"model": {"w": torch.zeros(2), "evil": payload}}, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle named .pth
        with open(path, "wb") as f:
            pickle.dump({"model": {"evil": payload}}, f, protocol=2 if layout == "bare-pickle-p2" else 5)


PAYLOAD_LAYOUTS = ["torch-zip", "torch-zip-top-level", "torch-legacy", "bare-pickle-p2", "bare-pickle-p5"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("layout", PAYLOAD_LAYOUTS)
def test_an_authors_pth_with_a_pickle_payload_is_refused_without_running_it(tmp_path, capsys, layout):
    marker = tmp_path / "marker"
    path = tmp_path / "UniRef++_R50.pth"
    _write_payload(path, layout, marker)
    with pytest.raises(ValueError, match="never unpickles arbitrary objects") as info:
        convert_authors_checkpoint(path, tmp_path / "out")
    assert str(path) in str(info.value)
    # names the global it refused (protocol 5 is refused at its first FRAME opcode, before the global)
    assert ("system" if layout != "bare-pickle-p5" else "Unsupported operand") in str(info.value)
    assert not marker.exists() and not (tmp_path / "out").exists()

    assert main(["convert-uniref", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and "never unpickles arbitrary objects" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_the_payload_is_live(tmp_path):
    """The control: an unrestricted unpickler does run it (so the tests above would notice a regression)."""
    marker = tmp_path / "marker"
    _write_payload(tmp_path / "evil.pth", "torch-zip", marker)
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("layout", ["torch-zip", "bare-pickle-p2"])
def test_sam_weights_with_a_pickle_payload_are_refused_without_running_it(tmp_path, layout):
    marker = tmp_path / "marker"
    path = tmp_path / "sam_vit_b.pth"
    _write_payload(path, layout, marker)
    with pytest.raises(ValueError, match="cannot read checkpoint") as info:
        build_sam("tiny", checkpoint=path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match=str(path)):  # --sam PATH: the size is read from the weights first
        build_sam_from_option(str(path))
    assert not marker.exists()


def test_a_refcoco_refs_pickle_with_a_payload_is_refused_without_running_it(tmp_path):
    """``refs(unc).p`` is a pickle by the dataset's own format: read with an unpickler that knows builtins only."""
    from fixtures_layouts import write_refcoco

    from unifusion_sam.data.io import DataError
    from unifusion_sam.data.readers import RefCOCO

    marker = tmp_path / "marker"
    ref = write_refcoco(tmp_path / "refer")
    with open(ref["refs_path"], "wb") as f:
        pickle.dump([{"ref_id": 0, "evil": RunsCommand(marker)}], f, protocol=2)
    with pytest.raises(DataError, match=r"posix\.system is not allowed") as info:
        RefCOCO(tmp_path / "refer", "refcoco", "train")
    assert str(ref["refs_path"]) in str(info.value) and not marker.exists()
