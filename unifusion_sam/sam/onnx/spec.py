"""The exported folder's format: file names, ``export_config.json``, and the checks a loader makes before
it trusts a folder (every graph present and unchanged, the opset and library version it expects).

``export_config.json`` holds ``format`` (:data:`FORMAT_VERSION`), ``library_version``, ``opset``,
``precision`` (``float32``, ``float16`` or ``int8``), the preprocessing (``image_size``, ``pixel_mean`` /
``pixel_std`` on the 0..255 scale, resize the longest side and pad bottom-right), the model's geometry, the
tokenizer's file and inputs, the adapter's configuration, and per graph its ``file``, ``sha256``, and its
``inputs`` / ``outputs`` as ``{name, dtype, shape}`` (dynamic axes named: ``objects``, ``refs``, ``tokens``
...). Graph inputs and outputs are float32 whatever the precision inside.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ...version import __version__

CONFIG_NAME = "export_config.json"
TOKENIZER_NAME = "tokenizer.json"
FORMAT_VERSION = 1
#: every graph an export can hold; ``text`` / ``fuse_text`` only when the adapter has a text encoder
GRAPH_NAMES = ("image", "text", "mask", "fuse_text", "fuse_mask", "prompt", "decoder")
REQUIRED_GRAPHS = ("image", "mask", "fuse_mask", "prompt", "decoder")
MIN_OPSET = 14  # scaled_dot_product_attention and LayerNormalization-free attention masks export from 14


def check_opset(opset: int) -> int:
    """The opset, or a ``ValueError`` when export cannot target it."""
    import torch.onnx

    newest = getattr(torch.onnx, "_constants", None)
    newest = getattr(newest, "ONNX_MAX_OPSET", 20) if newest is not None else 20
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {newest} (what this torch exports), got {opset!r}")
    return opset


def _series(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def read_config(folder: Path, *, opset: int | None = None, verify: bool = True) -> dict:
    """``export_config.json`` of ``folder`` after checking the folder (see the module docstring).

    Raises ``FileNotFoundError`` for a missing config or graph, ``ValueError`` for a corrupt one (its hash
    differs from the config's), an unknown format, a graph exported with another opset than the config
    (or than ``opset``, when the caller expects one), or an export from another library series (major.minor)
    than this one, with what to do about it."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not an ONNX export: {CONFIG_NAME} is missing (write one with "
                                "`unifusion-sam export-onnx` or model.export_onnx)")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); export the model again") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: export format {config.get('format') if isinstance(config, dict) else None!r}, this "
                         f"library reads format {FORMAT_VERSION}; export the model again with this version")
    exported = str(config.get("library_version", "?"))
    if _series(exported) != _series(__version__):
        raise ValueError(f"{folder} was exported by unifusion-sam {exported}; this is {__version__}, which loads "
                         f"exports of {'.'.join(map(str, _series(__version__)))}.x only (graph inputs may differ): "
                         "export the model again with this version, or install the one that exported it")
    if opset is not None and config.get("opset") != opset:
        raise ValueError(f"{folder} holds graphs of opset {config.get('opset')}, not the expected opset {opset}; "
                         f"export with --opset {opset}")
    graphs = config.get("graphs")
    if not isinstance(graphs, dict) or any(g not in graphs for g in REQUIRED_GRAPHS):
        raise ValueError(f"{path} lists graphs {sorted(graphs) if isinstance(graphs, dict) else graphs!r}; an export "
                         f"has at least {list(REQUIRED_GRAPHS)}")
    for name, entry in graphs.items():
        file = folder / entry["file"]
        if not file.is_file():
            raise FileNotFoundError(f"{folder} is an incomplete ONNX export: the {name} graph {entry['file']} is "
                                    "missing; export the model again")
        if verify:
            digest = hashlib.sha256()
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != entry.get("sha256"):
                raise ValueError(f"the {name} graph {file} is corrupt or not the one exported (its SHA-256 differs "
                                 f"from {CONFIG_NAME}'s); export the model again")
        graph_opset = graph_opset_of(file)
        if graph_opset != config.get("opset"):
            raise ValueError(f"the {name} graph {file} is of opset {graph_opset} but this export is of opset "
                             f"{config.get('opset')}: a graph from another export; export the model again")
    if config.get("text") is not None and not (folder / config["text"]["tokenizer"]).is_file():
        raise FileNotFoundError(f"{folder} is an incomplete ONNX export: the tokenizer {config['text']['tokenizer']} "
                                "is missing")
    return config


def graph_opset_of(file: Path) -> int | None:
    """The default-domain opset a graph file imports (``ValueError`` when the file is not an ONNX model)."""
    import onnx

    try:
        proto = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError types
        raise ValueError(f"{file} is not a readable ONNX model ({type(exc).__name__}: {exc}); export the model "
                         "again") from exc
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
