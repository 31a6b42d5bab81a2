"""Export a UniFusion-SAM model to ONNX: one graph per stage (:mod:`.graphs`), the tokenizer, and
``export_config.json`` saying what each graph takes and returns (:mod:`.spec`).

``export_onnx(model, out_dir)`` traces every graph on CPU in float32 with dynamic object / reference /
token counts, runs each exported graph once in onnxruntime against its PyTorch module (the largest
difference is recorded in the config), optionally converts the graphs to float16 (``fp16``, for GPUs) or
quantises their linear layers to int8 (``int8``, onnxruntime's dynamic quantisation, for CPUs), and moves
the finished folder into place in one rename, so an interrupted export never leaves a half-written one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...version import __version__
from . import graphs
from .spec import CONFIG_NAME, FORMAT_VERSION, GRAPH_NAMES, TOKENIZER_NAME, check_opset

if TYPE_CHECKING:
    from ..adapter.model import UniFusionSam

DEFAULT_OPSET = 17


def exportable(model) -> None:
    """A ``ValueError`` naming the module when ``model`` cannot be exported (see :func:`export_onnx`)."""
    if getattr(model, "family", None) != "sam" or not hasattr(model, "backend"):
        raise ValueError(f"ONNX export covers UniFusion-SAM models (the SAM family); got {type(model).__name__} "
                         f"(family {getattr(model, 'family', None)!r}). The full UniRef++ model has no ONNX exporter: its "
                         "per-frame decode (the two-stage Deformable-DETR transformer: multi-scale deformable sampling, "
                         "top-k query selection and the dynamic mask head) is not split into exportable graphs yet")
    backend = model.backend
    if backend.family != "meta":
        encoder = type(backend.image_encoder)
        raise ValueError(f"the image encoder {encoder.__module__}.{encoder.__qualname__} of this {backend.family!r} SAM has "
                         "no ONNX export here: export covers Meta segment-anything SAMs (vit_b/l/h, tiny and the "
                         "lite0 stand-ins); transformers' SamModel and SAM 2's Hiera trunk with its FPN neck are not "
                         "traced yet")
    if model.text_point is not None:
        raise ValueError("this adapter has a text-point head (config.text_point, UniFusionSam.text_point): its "
                         "decode is not split into exportable graphs; export an adapter without it (the default)")


def _examples(model: UniFusionSam, tokens: dict[str, torch.Tensor] | None) -> dict[str, tuple]:
    """Example inputs of every graph (two objects, two references, three point prompts)."""
    s, (h, w) = model.image_size, model.backend.embedding_size
    c = model.config.fusion.dim
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, s, s, generator=gen)
    with torch.no_grad():
        features = model.encode_image(pixels)
    units = torch.rand(2, 3, s, s, generator=gen)
    masks = (torch.rand(2, s, s, generator=gen) > 0.5).float()
    ref = graphs.MaskGraph(model)(units, masks, features)
    t = ref[0].shape[1]
    n = 2
    key_padding = torch.zeros(n, 2 * t, dtype=torch.bool)
    key_padding[1, t:] = True
    ex = {
        "image": (pixels,),
        "mask": (units, masks, features),
        "fuse_mask": (features[:1], torch.randn(n, 2 * t, c, generator=gen), torch.randn(n, 2 * t, c, generator=gen),
                      key_padding, torch.ones(n, 2 * t, dtype=torch.bool), torch.randn(n, c, generator=gen),
                      torch.tensor([True, True]), torch.tensor([True, False])),
        "prompt": (torch.rand(n, 3, 2, generator=gen) * s, torch.tensor([[1, 0, -1], [2, 3, 1]])),
        "decoder": (torch.randn(n, 256, h, w, generator=gen), torch.randn(n, 2, 256, generator=gen), features[:1]),
    }
    if tokens is not None:
        ex["text"] = tuple(tokens.values())
        length = 4
        padding = torch.zeros(n, length, dtype=torch.bool)
        padding[1, 2:] = True
        ex["fuse_text"] = (features[:1], torch.randn(n, length, c, generator=gen), padding,
                           torch.randn(n, c, generator=gen), torch.tensor([True, False]))
    return ex


def _io(model: UniFusionSam, token_names: list[str]) -> dict[str, tuple[list[str], list[str], dict]]:
    """Input / output names and dynamic axes of every graph."""
    return {
        "image": (["pixels"], ["features"], {"pixels": {0: "batch"}, "features": {0: "batch"}}),
        "text": (token_names, ["words", "pooled"],
                 {**{k: {0: "batch", 1: "tokens"} for k in token_names}, "words": {0: "batch", 1: "tokens"},
                  "pooled": {0: "batch"}}),
        "mask": (["units", "masks", "features"], ["keys", "values", "prototype"],
                 {k: {0: "refs"} for k in ("units", "masks", "features", "keys", "values", "prototype")}),
        "fuse_text": (["features", "words", "word_padding", "text_pooled", "has_text"], ["delta", "token"],
                      {"words": {0: "objects", 1: "words"}, "word_padding": {0: "objects", 1: "words"},
                       "text_pooled": {0: "objects"}, "has_text": {0: "objects"}, "delta": {0: "objects"},
                       "token": {0: "objects"}}),
        "fuse_mask": (["features", "keys", "values", "key_padding", "key_local", "mask_pooled", "has_mask", "tracking"],
                      ["delta", "token"],
                      {**{k: {0: "objects", 1: "ref_tokens"} for k in ("keys", "values", "key_padding", "key_local")},
                       **{k: {0: "objects"} for k in ("mask_pooled", "has_mask", "tracking", "delta", "token")}}),
        "prompt": (["coords", "labels"], ["sparse"],
                   {"coords": {0: "objects", 1: "points"}, "labels": {0: "objects", 1: "points"},
                    "sparse": {0: "objects", 1: "points"}}),
        "decoder": (["fused", "sparse", "features"], ["logits", "scores"],
                    {"fused": {0: "objects"}, "sparse": {0: "objects", 1: "prompt_tokens"}, "logits": {0: "objects"},
                     "scores": {0: "objects"}}),
    }


def _modules(model: UniFusionSam, token_names: list[str]) -> dict[str, torch.nn.Module]:
    mods = {"image": graphs.ImageGraph(model), "mask": graphs.MaskGraph(model),
            "fuse_mask": graphs.FuseMaskGraph(model), "prompt": graphs.PromptGraph(model),
            "decoder": graphs.DecoderGraph(model)}
    if model.text_encoder is not None:
        mods["text"] = graphs.TextGraph(model, token_names)
        mods["fuse_text"] = graphs.FuseTextGraph(model)
    # in eval mode before tracing: the exporter puts a module back in the mode it found it in, and a graph
    # module in training mode would then switch the model's dropout on
    return {name: module.eval() for name, module in mods.items()}


def _value_info(values: list, names: list[str], axes: dict) -> list[dict]:
    """``[{name, dtype, shape}]`` with symbolic names for the dynamic axes (the config's description)."""
    out = []
    for name, value in zip(names, values):
        dims = [axes.get(name, {}).get(i, int(n)) for i, n in enumerate(value.shape)]
        out.append({"name": name, "dtype": str(value.dtype).replace("torch.", ""), "shape": dims})
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_onnx(model, out_dir: str | os.PathLike, *, opset: int = DEFAULT_OPSET, fp16: bool = False,
                int8: bool = False, overwrite: bool = False, verify: bool = True) -> Path:
    """Export ``model`` (a :class:`UniFusionSam` on a Meta segment-anything SAM) to ``out_dir``; returns it.

    Writes ``image.onnx``, ``mask.onnx``, ``fuse_mask.onnx``, ``prompt.onnx``, ``decoder.onnx`` and, with a
    text encoder, ``text.onnx``, ``fuse_text.onnx`` and ``tokenizer.json``, plus ``export_config.json``
    (inputs / outputs of each graph, preprocessing, versions, file hashes). ``opset``: the ONNX opset (14 or
    newer); ``fp16``: float16 weights and compute inside each graph (inputs and outputs stay float32; for
    GPU providers); ``int8``: onnxruntime dynamic quantisation of the MatMul / Gemm weights (for CPUs).
    ``overwrite``: replace an earlier export in ``out_dir`` (any other non-empty folder is refused).
    ``verify``: run every graph once in onnxruntime against PyTorch (needs ``onnxruntime``).
    """
    exportable(model)
    check_opset(opset)
    if fp16 and int8:
        raise ValueError("choose one of fp16 and int8")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not (out_dir / CONFIG_NAME).is_file():
            raise FileExistsError(f"{out_dir} exists and is not an empty folder nor an earlier ONNX export; choose "
                                  "another folder")
        if not overwrite:
            raise FileExistsError(f"{out_dir} holds an ONNX export already; pass overwrite=True (--overwrite) to "
                                  "replace it")
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise ImportError("ONNX export needs the onnx extra: pip install 'unifusion-sam[onnx]'") from exc

    model = copy.deepcopy(model).cpu().float().eval()  # the caller's model keeps its device and modes
    model.mask_encoder.config.compute_dtype = "float32"  # exported graphs compute in float32 (see fp16)
    tokens = token_names = None
    if model.text_encoder is not None:
        tokens = model.text_encoder.tokenize(["a red circle", "the big blue square on the left"])
        token_names = list(tokens)
    examples = _examples(model, tokens)
    io = _io(model, token_names or [])
    modules = _modules(model, token_names or [])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        described = {}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python-side shape checks
            for name, module in modules.items():
                inputs, outputs, axes = io[name]
                args = examples[name]
                if name == "decoder" and not module.high_res:
                    args, inputs = args[:2], inputs[:2]
                torch.onnx.export(module, args, str(work / f"{name}.onnx"), input_names=inputs, output_names=outputs,
                                  dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
                results = module(*args)
                results = results if isinstance(results, tuple) else (results,)
                described[name] = {"inputs": _value_info(list(args), inputs, axes),
                                   "outputs": _value_info(list(results), outputs, axes)}
        if model.text_encoder is not None:
            model.text_encoder.tokenizer.backend_tokenizer.save(str(work / TOKENIZER_NAME))
        checks = verify_graphs(work, modules, examples, described) if verify else {}
        precision = "float32"
        if fp16 or int8:
            precision = "float16" if fp16 else "int8"
            for name in modules:
                _lower_precision(work / f"{name}.onnx", precision)
        config = _config(model, opset, precision, described, checks, token_names, work)
        (work / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(work, 0o777 & ~umask)  # mkdtemp's folder is private; the export is an ordinary folder
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(work, out_dir)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return out_dir


def verify_graphs(folder: Path, modules: dict, examples: dict, described: dict) -> dict[str, float]:
    """Run each exported graph on its example inputs in onnxruntime: the largest absolute difference from
    the PyTorch module per graph (``ValueError`` past 1e-3: the export is wrong)."""
    import onnxruntime as ort

    checks = {}
    for name, module in modules.items():
        session = ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        feeds = {i["name"]: a.numpy() for i, a in zip(described[name]["inputs"], examples[name])}
        feeds = {k: v for k, v in feeds.items() if k in {i.name for i in session.get_inputs()}}
        got = session.run(None, feeds)
        with torch.no_grad():
            want = module(*examples[name][: len(described[name]["inputs"])])
        want = want if isinstance(want, tuple) else (want,)
        diff = max(float(np.abs(g.astype(np.float64) - w.double().numpy()).max()) for g, w in zip(got, want))
        if not diff <= 1e-3:
            raise ValueError(f"the exported {name}.onnx differs from PyTorch by {diff:.3g} (more than 1e-3)")
        checks[name] = diff
    return checks


def _lower_precision(path: Path, precision: str) -> None:
    import onnx

    if precision == "float16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(path))
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantised = path.with_suffix(".int8.onnx")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to pre-process (shape inference) goes to the root logger
        try:
            quantize_dynamic(str(path), str(quantised), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])
        finally:
            root.setLevel(level)
        os.replace(quantised, path)


def _config(model: UniFusionSam, opset: int, precision: str, described: dict, checks: dict,
            token_names: list[str] | None, folder: Path) -> dict:
    transform = model.transform
    text = model.config.text
    return {
        "format": FORMAT_VERSION,
        "library_version": __version__,
        "torch_version": torch.__version__,
        "opset": opset,
        "precision": precision,
        "family": "sam",
        "sam_size": model.config.sam_size,
        "preprocessing": {
            "image_size": model.image_size,
            "resize": "longest_side",
            "pad": "bottom_right",
            "pixel_mean": transform.pixel_mean.flatten().tolist(),
            "pixel_std": transform.pixel_std.flatten().tolist(),
        },
        "embedding_size": list(model.backend.embedding_size),
        "feature_channels": model.backend.feature_channels,
        "high_res": bool(getattr(model.backend, "high_res", False)),
        "locality_prior": model.fusion.pos_proj is not None,
        "reference_pool": model.config.reference_pool,
        "text": None if text is None else {"tokenizer": TOKENIZER_NAME, "inputs": token_names,
                                           "max_length": text.max_length, "padding": text.padding,
                                           "pad_id": int(model.text_encoder.tokenizer.pad_token_id or 0)},
        "adapter_config": json.loads(model.config.to_json()),
        "graphs": {name: {"file": f"{name}.onnx", "sha256": _sha256(folder / f"{name}.onnx"), **desc}
                   for name, desc in described.items()},
        "export_check_max_abs_diff": checks,
    }


__all__ = ["DEFAULT_OPSET", "GRAPH_NAMES", "export_onnx", "exportable"]
