"""A UniFusion-SAM model on onnxruntime: the exported graphs (:mod:`.export`) behind the shared interface.

:class:`OnnxSam` implements :class:`~unifusion_sam.interface.ReferenceSegmenter` with one
``onnxruntime.InferenceSession`` per graph, so ``predict``, ``track``, the video session, the command line,
the web demo and the evaluation runners work on an export unchanged. Between the graphs it does what
:class:`~unifusion_sam.sam.adapter.model.UniFusionSam` does in Python: SAM's preprocessing, tokenising
(``tokenizers``), grouping each object's references, and decoding objects in groups by the extra tokens
they take; no network weight is in PyTorch.

    model = unifusion_sam.from_onnx("exported/")            # CPU; CUDA when onnxruntime-gpu has it
    model.predict(image, text="the red circle").mask
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ...encoders.text import TextFeatures, validate_sentences
from ...fusion.unifusion import ReferenceTokens
from ...inference.mixin import ReferenceInferenceMixin
from ...interface import Decoded, MaskReference, MaskResult, ObjectQuery, PreparedImage, Prompts
from ..backends.transforms import SamTransform
from ..references import group_references, mean_by_owner, object_masks, object_text
from .spec import read_config

# torch's thread count while OnnxSam calls are in flight (process-wide, as torch's setting is)
_GLUE_LOCK = threading.Lock()
_GLUE = {"depth": 0, "threads": 1}


def providers_for(device: str | torch.device | None) -> list[str]:
    """onnxruntime providers for a device: CUDA first when asked for (or, with ``None``, when available)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    kind = None if device is None else torch.device(device).type
    if kind == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ValueError(f"device {device!r}: this onnxruntime has no CUDAExecutionProvider (providers: {available}); "
                             "install onnxruntime-gpu, or use the CPU")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if kind not in (None, "cpu"):
        raise ValueError(f"an ONNX model runs on 'cpu' or 'cuda', got device {device!r}")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if kind is None and "CUDAExecutionProvider" in available \
        else ["CPUExecutionProvider"]


class OnnxSam(ReferenceInferenceMixin):
    """An exported UniFusion-SAM model (see the module docstring). Build it with :func:`from_onnx`."""

    family = "sam_onnx"
    training = False

    def __init__(self, folder: str | os.PathLike, *, device: str | torch.device | None = None, opset: int | None = None,
                 verify: bool = True, threads: int | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise ImportError("running an ONNX export needs the onnx extra: pip install 'unifusion-sam[onnx]'") from exc
        self.folder = Path(folder)
        self.export_config = read_config(self.folder, opset=opset, verify=verify)
        pre = self.export_config["preprocessing"]
        self.image_size = int(pre["image_size"])
        self.transform = SamTransform(self.image_size, torch.tensor(pre["pixel_mean"]), torch.tensor(pre["pixel_std"]))
        self.threads = threads
        self.tokenizer = None
        text = self.export_config.get("text")
        if text is not None:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(self.folder / text["tokenizer"]))
            self.tokenizer.enable_truncation(int(text["max_length"]))
            self.tokenizer.no_padding()
            self._pad_id = int(text["pad_id"])
        self.sessions: dict = {}
        self.to(device)

    # ------------------------------------------------------------------ device, modes
    def to(self, device: str | torch.device | None = None, *args, **kwargs) -> OnnxSam:
        """(Re)create the sessions for ``device`` (``cpu`` or ``cuda``; ``None``: CUDA when available)."""
        import onnxruntime as ort

        providers = providers_for(device)
        if self.sessions and providers == self.providers:
            return self
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = int(self.threads)
        # the graphs run one after another: a session's threads spin for work between its own operators (the
        # next one starts at once), and stop when its run ends, or they would take the cores from the next
        # graph's session (4x slower on a 2-core CPU); see inference_context for torch's threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        # smaller blocks of a parallel loop's work, taken by whichever thread is free: a ViT-B image graph about
        # 5 % faster on two cores (1.51 against 1.59 s, 1.67 against 1.76 s in two interleaved runs)
        options.add_session_config_entry("session.dynamic_block_base", "2")
        options.log_severity_level = 3
        self.providers = providers
        self.sessions = {}
        for name, entry in self.export_config["graphs"].items():
            path = self.folder / entry["file"]
            try:
                self.sessions[name] = ort.InferenceSession(str(path), options, providers=providers)
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail / InvalidGraph types
                raise ValueError(f"onnxruntime cannot load the {name} graph {path} ({type(exc).__name__}: {exc}); "
                                 "export the model again") from exc
        self.inputs = {name: {i.name for i in s.get_inputs()} for name, s in self.sessions.items()}
        return self

    @contextmanager
    def inference_context(self):
        """Where the shared inference code calls this model (:func:`~unifusion_sam.inference.inference_mode`):
        torch on one thread. torch only runs the small glue between the graphs here; on its OpenMP pool, the
        workers a glue operation wakes spin after it and take the cores from onnxruntime's next graph (a
        one-object tracking step on two cores: 61.5 ms with them, 42.1 ms with torch on one thread). The
        caller's thread count is restored when the last of the calls in flight (a server's threads may
        overlap) has left."""
        with _GLUE_LOCK:
            if _GLUE["depth"] == 0:
                _GLUE["threads"] = torch.get_num_threads()
                torch.set_num_threads(1)
            _GLUE["depth"] += 1
        try:
            yield
        finally:
            with _GLUE_LOCK:
                _GLUE["depth"] -= 1
                if _GLUE["depth"] == 0:
                    torch.set_num_threads(_GLUE["threads"])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # outputs come back to host memory whatever the provider

    def eval(self) -> OnnxSam:
        return self

    def train(self, mode: bool = True) -> OnnxSam:
        if mode:
            raise ValueError("an ONNX export is for inference; train the PyTorch model and export it again")
        return self

    def encoder_version(self) -> float:
        return 0.0

    @property
    def config(self) -> dict:
        """The adapter's configuration as exported (a dict)."""
        return self.export_config["adapter_config"]

    def _run(self, name: str, **feeds: torch.Tensor | np.ndarray) -> list[torch.Tensor]:
        wanted = self.inputs[name]
        arrays = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in feeds.items()
                  if k in wanted}
        return [torch.from_numpy(np.asarray(out)) for out in self.sessions[name].run(None, arrays)]

    # ------------------------------------------------------------------ the shared inference interface
    def prepare_image(self, rgb: np.ndarray, task: str = "ris", pad_to: tuple[int, int] | None = None) -> PreparedImage:
        """SAM's resize-longest-side, normalise and square padding (as the exported model's SAM)."""
        return self.transform.image(rgb, "cpu")

    def prepare_mask(self, mask: np.ndarray, prepared: PreparedImage) -> torch.Tensor:
        return self.transform.mask(mask, "cpu")[0]

    def encode_frame(self, prepared: PreparedImage) -> torch.Tensor:
        """The image graph: frame features ``[1, D, h, w]``."""
        return self._run("image", pixels=prepared.pixels)[0]

    def tokenize(self, texts: str | Sequence[str]) -> dict[str, np.ndarray]:
        """``[B, L]`` int64 arrays, as the exported model's transformers tokenizer pads and truncates them."""
        if self.tokenizer is None:
            raise ValueError("this export has no text encoder (its adapter takes no sentences)")
        sentences = validate_sentences(texts)
        encoded = self.tokenizer.encode_batch(sentences)
        text = self.export_config["text"]
        length = int(text["max_length"]) if text["padding"] == "max_length" else max(len(e.ids) for e in encoded)
        out = {"input_ids": np.full((len(encoded), length), self._pad_id, dtype=np.int64),
               "attention_mask": np.zeros((len(encoded), length), dtype=np.int64),
               "token_type_ids": np.zeros((len(encoded), length), dtype=np.int64)}
        for i, e in enumerate(encoded):
            out["input_ids"][i, : len(e.ids)] = e.ids
            out["attention_mask"][i, : len(e.ids)] = 1
            out["token_type_ids"][i, : len(e.ids)] = e.type_ids
        return {k: out[k] for k in text["inputs"]}

    def encode_text(self, texts: list[str]) -> TextFeatures:
        """The text graph: words ``[B, L, C]``, padding ``[B, L]``, pooled ``[B, C]``."""
        tokens = self.tokenize(texts)
        words, pooled = self._run("text", **tokens)
        return TextFeatures(words=words, padding_mask=torch.from_numpy(tokens["attention_mask"] == 0), pooled=pooled)

    def encode_masks(self, frames: Sequence[torch.Tensor], prepared: Sequence[PreparedImage],
                     masks: torch.Tensor) -> MaskReference:
        """The mask graph on ``R`` masks ``[R, S, S]`` of one encoded frame (broadcast) or one frame each."""
        r = masks.shape[0]
        if len(frames) not in (1, r) or len(prepared) != len(frames):
            raise ValueError(f"{r} masks for {len(frames)} frames: give one frame or one per mask")
        units = torch.cat([p.unit for p in prepared]).expand(r, -1, -1, -1)
        features = torch.cat(list(frames)).expand(r, -1, -1, -1)
        keys, values, prototype = self._run("mask", units=units.contiguous(), masks=masks.float(),
                                            features=features.contiguous())
        return MaskReference([ReferenceTokens(keys, values)], prototype)

    def decode_objects(self, frame: torch.Tensor, prepared: PreparedImage, objects: Sequence[ObjectQuery], *,
                       task: str = "ris", tracking: bool = False, prompts: Prompts | None = None) -> Decoded:
        """All objects on one frame ``[1, D, h, w]``: the fuse graphs, then the decoder graph once per group
        of objects taking the same extra tokens (as ``UniFusionSam.decode``): logits ``[N, 1, 4h, 4w]``, scores ``[N]``."""
        n = max(len(objects), 1)
        embedding = frame[:, :256].expand(n, -1, -1, -1)
        fused, token = embedding, None
        refs = object_text(objects)
        has_any = torch.zeros(n, dtype=torch.bool)
        if refs.lang is not None:
            delta, token = self._run("fuse_text", features=frame, words=refs.lang.keys,
                                     word_padding=refs.lang.padding_mask, text_pooled=refs.text_pooled,
                                     has_text=refs.has_text)
            fused, has_any = fused + delta, has_any | refs.has_text
        found = object_masks(objects, tracking)
        if found is not None:
            encoded, owner, tracking_rows = found
            lv = encoded.levels[0]
            grouped = group_references(lv.keys, lv.values, owner, n, encoded.local)
            pooled, has_mask = mean_by_owner(encoded.prototype, owner, n)
            delta, mask_token = self._run("fuse_mask", features=frame, keys=grouped.keys, values=grouped.values,
                                          key_padding=grouped.padding_mask, key_local=grouped.local,
                                          mask_pooled=pooled, has_mask=has_mask,
                                          tracking=torch.zeros(n, dtype=torch.bool) if tracking_rows is None
                                          else tracking_rows)
            fused, has_any = fused + delta, has_any | has_mask
            token = mask_token if token is None else token + mask_token
        sparse = self._prompt_tokens(prompts, prepared, n)
        logits = torch.zeros(n, 1, *(4 * s for s in frame.shape[-2:]))
        scores = torch.zeros(n)
        for value in ((False, True) if token is not None else (False,)):
            idx = torch.nonzero(has_any == value).flatten() if token is not None else torch.arange(n)
            if idx.numel() == 0:
                continue
            sp = sparse[idx]
            if value:
                sp = torch.cat([sp, token[idx, None, :]], dim=1)
            lg, sc = self._run("decoder", fused=fused[idx].contiguous(), sparse=sp.contiguous(), features=frame)
            logits[idx], scores[idx] = lg, sc
        return Decoded(logits, scores)

    def _prompt_tokens(self, prompts: Prompts | None, prepared: PreparedImage, n: int) -> torch.Tensor:
        """SAM's sparse prompt embeddings ``[N, P, 256]`` (``P = 0`` without prompts), in the layout of Meta's
        ``PromptEncoder``: the points (with a padding point when there is no box), then the box's corners."""
        coords, labels = [], []
        size = prepared.original_size
        if prompts is not None and prompts.points is not None:
            coords.append(self.transform.coords(prompts.points, size).reshape(-1, 2))
            labels.append(np.asarray(prompts.labels, dtype=np.int64).reshape(-1))
            if prompts.box is None:
                coords.append(np.zeros((1, 2)))
                labels.append(np.array([-1]))
        if prompts is not None and prompts.box is not None:
            coords.append(self.transform.boxes(np.asarray(prompts.box)[None], size).reshape(2, 2))
            labels.append(np.array([2, 3]))
        if not coords:
            return torch.zeros(n, 0, 256)
        c = np.concatenate(coords).astype(np.float32)[None].repeat(n, 0)
        lab = np.concatenate(labels).astype(np.int64)[None].repeat(n, 0)
        return self._run("prompt", coords=c, labels=lab)[0]

    def postprocess(self, decoded: Decoded, prepared: PreparedImage, task: str = "ris") -> MaskResult:
        """Low-res logits -> logits, probabilities and masks (logit > 0) at the original size."""
        full = self.transform.postprocess(decoded.logits, prepared.input_size, prepared.original_size)[:, 0]
        return MaskResult(full.sigmoid(), full > 0.0, full)

    def __repr__(self) -> str:
        return f"OnnxSam({str(self.folder)!r}, precision={self.export_config['precision']}, providers={self.providers})"


def from_onnx(folder: str | os.PathLike, *, device: str | torch.device | None = None, opset: int | None = None,
              verify: bool = True, threads: int | None = None) -> OnnxSam:
    """The exported model in ``folder`` on onnxruntime (``device``: ``"cpu"``, ``"cuda"``, or ``None`` for
    CUDA when available); ``opset``: the opset the caller expects (an error when the export differs);
    ``verify``: check every graph's hash against ``export_config.json``; ``threads``: onnxruntime's intra-op
    threads (default: its own)."""
    return OnnxSam(folder, device=device, opset=opset, verify=verify, threads=threads)
