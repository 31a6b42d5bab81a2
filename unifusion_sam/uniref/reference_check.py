"""Check this library's UniRef++ against a numerical reference made by running the authors' code.

    python -m unifusion_sam.uniref.reference_check DIR [--text-encoder ID] [--threads N]

``DIR`` is a fixture folder of the ``uniref_r50`` format: ``manifest.json`` (the authors' state-dict
layout), ``weights_rule.py`` (deterministic weights from a seed) and ``inputs_and_outputs.npz``
(inputs, outputs and intermediates of RIS, FSS, VOS and RVOS, and the training losses). The check
generates the weights with the npz's seed, converts them with :mod:`~unifusion_sam.uniref.convert`,
loads them strictly, runs every task on the fixture's inputs through the library's own stages and
post-processing, computes the training outputs and losses on the RIS input (SimOTA matches per
decoder layer, the matched masks, the proposals' Hungarian match, every weighted loss term), and
prints one line per compared array: name, max abs difference, tolerance, verdict. It exits with
status 1 if any *final* output (``*``: logits, boxes and masks of all queries, the post-processed
result, matched indices, loss terms) is outside tolerance; intermediates are printed for diagnosis.

Tolerances: float32 arrays 1e-4 x max(1, the array's scale); float16 arrays 2e-3 x max(1, scale)
(their storage precision); loss terms 1e-4 x max(1, |value|) with the same weight; index arrays exactly; binary masks may differ only where our logit is
within 1e-3 of the threshold. The two-stage top-k selection may hold exact ties (padded tokens all
propose the same box with the same score; ``torch.topk`` orders ties arbitrarily): slots that swap
exactly tied proposals count as equal. It may also hold near-ties: if our selection differs while every
proposal score agrees within tolerance, the recorded selection is used for that task (teacher
forcing), and the check says so and why.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..interface import ObjectQuery, PreparedImage
from .convert import model_from_authors_state
from .losses.criterion import base_name
from .modeling.layers import aligned_bilinear
from .transforms import padding_mask

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


class Report:
    """Collects comparisons and prints one line each."""

    def __init__(self, z: np.lib.npyio.NpzFile, out=sys.stdout) -> None:
        self.z, self.out, self.failed, self.lines = z, out, [], 0

    def has(self, name: str) -> bool:
        return name in self.z.files

    def tolerance(self, name: str, ref: np.ndarray) -> float:
        scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
        return (2e-3 if ref.dtype == np.float16 else 1e-4) * scale

    def array(self, name: str, ours: torch.Tensor, final: bool = False) -> None:
        if not self.has(name):
            return
        ref = self.z[name]
        got = ours.detach().cpu().double().numpy().reshape(ref.shape) if ours.numel() == ref.size else None
        if got is None:
            self.line(name, float("inf"), 0.0, final, f"shape {tuple(ours.shape)} vs {ref.shape}")
            return
        if ref.dtype.kind in "iub":
            diff = float(np.abs(got - ref.astype(np.float64)).max()) if ref.size else 0.0
            self.line(name, diff, 0.0, final)
            return
        self.line(name, float(np.abs(got - ref.astype(np.float64)).max()), self.tolerance(name, ref), final)

    def binary(self, name: str, ours: torch.Tensor, logits: torch.Tensor, threshold_logit: float = 0.0,
               final: bool = True) -> None:
        """A 0/1 mask: differences allowed only where our logit is within 1e-3 of the threshold."""
        if not self.has(name):
            return
        ref = self.z[name].astype(bool).reshape(tuple(ours.shape))
        mine = ours.detach().cpu().numpy().astype(bool)
        wrong = mine != ref
        near = np.abs(logits.detach().cpu().double().numpy().reshape(ref.shape) - threshold_logit) < 1e-3
        bad = int((wrong & ~near).sum())
        self.line(name, float(wrong.sum()), 0.0, final, f"{int(wrong.sum())} pixels differ, {bad} away from the threshold",
                   ok=bad == 0)

    def line(self, name, diff, tol, final, note="", ok=None):
        ok = diff <= tol if ok is None else ok
        if final and not ok:
            self.failed.append(name)
        mark = "*" if final else " "
        verdict = "ok" if ok else ("FAIL" if final else "off")
        print(f"{mark} {name:34s} max|diff| {diff:10.3g}  tol {tol:9.3g}  {verdict}{'  ' + note if note else ''}",
              file=self.out)
        self.lines += 1

    def note(self, text: str) -> None:
        print(f"  note: {text}", file=self.out)


def _load_rule(folder: Path):
    spec = importlib.util.spec_from_file_location("fixture_weights_rule", folder / "weights_rule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prepared(z, image_key: str, mean: torch.Tensor, std: torch.Tensor) -> PreparedImage:
    """The fixture image (already at network resolution) normalised and zero-padded to a multiple of 32."""
    img = torch.as_tensor(z[image_key]).permute(2, 0, 1).float()
    h, w = img.shape[-2:]
    ph, pw = (h + 31) // 32 * 32, (w + 31) // 32 * 32
    pixels = F.pad((img - mean.view(3, 1, 1)) / std.view(3, 1, 1), (0, pw - w, 0, ph - h))[None]
    return PreparedImage(pixels, (h, w), (h, w))


def _padded_mask(z, key: str, prepared: PreparedImage) -> torch.Tensor:
    m = torch.as_tensor(z[key].astype(np.float32))
    ph, pw = prepared.padded_size
    return F.pad(m, (0, pw - m.shape[1], 0, ph - m.shape[0]))[None]


def _tied_swaps(report: Report, prefix: str, ours: torch.Tensor) -> tuple[int, int]:
    """(slots that differ from the recorded top-k, those that are not swaps between proposals whose recorded
    scores are exactly equal). Exactly tied proposals are interchangeable: padded tokens, for instance, all
    propose the same box with the same score, and ``torch.topk`` lists ties in no fixed order."""
    recorded = report.z[f"{prefix}_enc_topk_indices"]
    mine = ours.detach().cpu().numpy().reshape(recorded.shape)
    differ = mine != recorded
    scores = report.z[f"{prefix}_enc_outputs_class"].max(-1)  # [B, S]
    rows = np.arange(recorded.shape[0])[:, None]
    tied = scores[rows, np.clip(mine, 0, scores.shape[1] - 1)] == scores[rows, recorded]
    return int(differ.sum()), int((differ & ~tied).sum())


def _selection(report: Report, task: str, det, prefix: str) -> torch.Tensor | None:
    """Compare the proposal scores and selection; on a near-tie return the recorded selection to force."""
    out = det.transformer
    report.array(f"{prefix}_enc_outputs_class", out.enc_class)
    key = f"{prefix}_enc_topk_indices"
    if not report.has(key):
        return None
    recorded = torch.as_tensor(report.z[key])
    if torch.equal(out.topk.cpu(), recorded) or _tied_swaps(report, prefix, out.topk)[1] == 0:
        return None  # the same selection, up to the order of exactly tied (interchangeable) proposals
    ref_scores = report.z[f"{prefix}_enc_outputs_class"]
    gap = float(np.abs(out.enc_class.detach().cpu().numpy() - ref_scores).max())
    tol = report.tolerance(f"{prefix}_enc_outputs_class", ref_scores)
    if gap > tol:
        return None  # a real difference: compared unforced, and reported
    slots = int((out.topk.cpu() != recorded).sum())
    report.note(f"{task}: {slots} of {recorded.shape[1]} proposal slots differ from the recorded top-k while every "
                f"proposal score agrees within {gap:.2g} <= {tol:.2g} (a near-tie): using the recorded selection for "
                "this task (teacher forcing)")
    return recorded.to(out.topk.device)


def run_check(folder: str | Path, text_encoder: str = MINILM, out=sys.stdout) -> bool:
    """Run every comparison; True when all final outputs are within tolerance."""
    folder = Path(folder)
    z = np.load(folder / "inputs_and_outputs.npz", allow_pickle=False)
    report = Report(z, out)
    rule = _load_rule(folder)
    state = rule.make_state_dict(json.loads((folder / "manifest.json").read_text()), int(z["meta_seed"]))
    model = model_from_authors_state(state, text_encoder, where=f"{folder} (seed {int(z['meta_seed'])})")
    del state
    mean, std = model.pixel_mean.view(3), model.pixel_std.view(3)
    if report.has("meta_pixel_mean"):
        report.array("meta_pixel_mean", mean)
        report.array("meta_pixel_std", std)
    with torch.no_grad():
        query = _prepared(z, "input_query_image", mean, std)
        report.array("query_model_input", query.pixels)
        report.array("query_pad_mask", padding_mask(query))
        frame = model.encode_frame(query)
        report.array("query_backbone_res2", frame.res2)
        for level in range(4):
            report.array(f"query_srcs_l{level}", frame.srcs[level])
            report.array(f"query_src_masks_l{level}", frame.paddings[level])
            report.array(f"query_pos_l{level}", frame.pos[level])

        text = None
        if model.text_encoder is not None and report.has("input_sentence"):
            sentence = str(z["input_sentence"])
            tokens = model.text_encoder.tokenize([sentence])
            report.array("text_input_ids", tokens["input_ids"])
            report.array("text_attention_mask", tokens["attention_mask"])
            text = model.encode_text([sentence])
            report.array("ris_text_features", text.words)
            report.array("ris_text_pad_mask", text.padding_mask)
            report.array("ris_text_sentence_embed", text.pooled)

        templates = {}
        for name, image_key, mask_key in (("init", "input_ref_image", "input_ref_mask"),
                                          ("prev", "input_prev_image", "input_prev_mask")):
            if not report.has(image_key):
                continue
            prep = _prepared(z, image_key, mean, std)
            masks = _padded_mask(z, mask_key, prep)
            report.array(f"tmpl_{name}_mask_input", masks)
            ref = model.encode_masks([model.encode_frame(prep)], [prep], masks)
            for level, tokens in enumerate(ref.levels):
                report.array(f"tmpl_{name}_refs_l{level}", tokens.keys)
                report.array(f"tmpl_{name}_values_l{level}", tokens.values)
                report.array(f"tmpl_{name}_pad_masks_l{level}", tokens.valid_mask().logical_not())
            report.array(f"tmpl_{name}_ref_embeds", torch.stack([t.pooled for t in ref.levels]))
            templates[name] = ref

        tasks = [("ris", "ris", [ObjectQuery(text=text)] if text is not None else None),
                 ("fss", "fss", [ObjectQuery(masks=[templates["init"]])] if "init" in templates else None),
                 ("vos", "video", [ObjectQuery(masks=[templates["init"], templates["prev"]])] if len(templates) == 2 else None),
                 ("rvos", "video", [ObjectQuery(text=text, masks=[templates["init"], templates["prev"]])]
                  if len(templates) == 2 and text is not None else None)]
        for prefix, task, objects in tasks:
            if objects is None or not report.has(f"{prefix}_pred_logits"):
                continue
            _check_task(report, model, frame, query, objects, prefix, task)
        if text is not None and report.has("train_loss_names"):
            _check_training(report, model, frame, query, text)
    verdict = "PASS" if not report.failed else f"FAIL ({len(report.failed)}: {', '.join(report.failed)})"
    print(f"reference check {folder}: {report.lines} arrays compared, {verdict}", file=out)
    return not report.failed


def _check_task(report: Report, model, frame, query: PreparedImage, objects, prefix: str, task: str) -> None:
    decoded, det, rows = model.run_objects(frame, objects, task)
    for level in range(4):
        report.array(f"{prefix}_fused_srcs_l{level}", det.srcs[level])
    forced = _selection(report, prefix, det, prefix)
    if forced is not None:
        decoded, det, rows = model.run_objects(frame, objects, task, topk=forced[None] if forced.dim() == 1 else forced)
    out = det.transformer
    if report.has(f"{prefix}_enc_topk_indices"):
        differ, untied = _tied_swaps(report, prefix, out.topk)
        note = f"{differ} slots hold another of exactly tied proposals" if differ and not untied else ""
        report.line(f"{prefix}_enc_topk_indices", float(untied), 0.0, False, note)
    report.array(f"{prefix}_memory", out.memory)
    report.array(f"{prefix}_enc_outputs_coord", out.enc_coord_unact.sigmoid())
    report.array(f"{prefix}_init_reference", out.init_reference)
    report.array(f"{prefix}_inter_references", out.inter_references)
    report.array(f"{prefix}_hs", out.hs)
    report.array(f"{prefix}_hs_last", out.hs[-1])
    report.array(f"{prefix}_controller_params", det.params)
    features = model.mask_features_of(det, rows)
    memory, c = out.memory, out.memory.shape[-1]
    levels, start = [], 0
    for h, w in out.shapes[:3]:
        levels.append(memory[:, start : start + h * w].transpose(1, 2).reshape(1, c, h, w))
        start += h * w
    report.array(f"{prefix}_mask_head_out", model.mask_features.fpn(levels))
    report.array(f"{prefix}_mask_feats", features)
    report.array(f"{prefix}_pred_logits", det.logits, final=True)
    report.array(f"{prefix}_pred_boxes", det.boxes, final=True)
    report.array(f"{prefix}_reference_points", det.reference_points)
    all_masks = model.mask_logits(features, det, rows)  # [1, Q, Hp/4, Wp/4]
    report.array(f"{prefix}_pred_masks", all_masks, final=True)
    report.array(f"{prefix}_mask_logits_stride4", all_masks, final=True)
    if report.has(f"{prefix}_pred_masks_topk_indices"):
        top = torch.topk(det.logits[0, :, 0], len(report.z[f"{prefix}_pred_masks_topk_indices"])).indices
        report.array(f"{prefix}_pred_masks_topk_indices", top, final=True)
        report.array(f"{prefix}_pred_masks_topk", aligned_bilinear(all_masks[:, top], 4), final=True)
    result = model.postprocess(decoded, query, task)
    if task == "video":
        report.array(f"{prefix}_post_top1_index", decoded.extras["query"][0], final=True)
        report.array(f"{prefix}_post_top1_score", decoded.scores[0], final=True)
        report.array(f"{prefix}_post_mask_prob", result.probs[0], final=True)
        return
    report.array(f"{prefix}_result_scores", decoded.scores, final=True)
    report.array(f"{prefix}_result_pred_classes", det.logits[0, decoded.extras["query"]].argmax(-1), final=True)
    report.array(f"{prefix}_result_pred_boxes", result.boxes, final=True)
    logits = result.logits if result.logits is not None else torch.logit(result.probs)
    threshold = float(np.log(model.config.mask_threshold / (1 - model.config.mask_threshold)))
    report.binary(f"{prefix}_result_pred_masks", result.masks, logits, threshold)


def _check_training(report: Report, model, frame, query: PreparedImage, text) -> None:
    """The training losses on the RIS input: SimOTA matches per decoder layer, the matched queries' masks,
    the proposals' Hungarian match, and every weighted loss term (1e-4 relative)."""
    from .losses.criterion import Target, UniRefCriterion
    from .modeling.model import layer_outputs

    z = report.z
    h, w = query.input_size
    xyxy = torch.as_tensor(z["input_query_gt_box_xyxy"]) / torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2, xyxy[:, 2] - xyxy[:, 0],
                         xyxy[:, 3] - xyxy[:, 1]], -1)
    report.array("train_target_boxes_cxcywh", boxes)
    masks = _padded_mask(z, "input_query_gt_mask", query)
    report.array("train_target_masks", masks)
    targets = [Target(torch.zeros(len(boxes), dtype=torch.long), boxes, masks)]
    lang, _ = model.references([ObjectQuery(text=text)])
    det = model.detect(model.fuse(frame, lang, None), frame)
    layers, proposals = layer_outputs(model, det, frame, targets)
    report.array("train_pred_logits", torch.stack([lo.logits for lo in layers]), final=True)
    report.array("train_pred_boxes", torch.stack([lo.boxes for lo in layers]), final=True)
    report.array("train_enc_pred_logits", proposals[0], final=True)
    report.array("train_enc_pred_boxes", proposals[1], final=True)
    for level, lo in enumerate(layers):
        report.array(f"train_matched_query_idx_dec{level}", lo.indices[0][0], final=True)
        report.array(f"train_matched_gt_idx_dec{level}", lo.indices[0][1], final=True)
        report.array(f"train_matched_masks_dec{level}", lo.masks, final=True)
    criterion = UniRefCriterion()
    _, enc_indices = criterion.proposal_losses(*proposals, targets)
    report.array("train_enc_matched_query_idx", enc_indices[0][0], final=True)
    report.array("train_enc_matched_gt_idx", enc_indices[0][1], final=True)
    losses = criterion(layers, proposals, targets)
    names = [str(n) for n in z["train_loss_names"]]
    missing = sorted(set(names) ^ set(losses))
    report.line("train_loss_names", float(len(missing)), 0.0, True, f"differ: {missing}" if missing else "")
    for name, value, weight in zip(names, z["train_loss_values"], z["train_loss_weights"]):
        if name not in losses:
            continue
        ours = float(losses[name])
        tol = 1e-4 * max(1.0, abs(float(value)))
        note = f"{ours:.6g} vs {float(value):.6g}" + ("" if criterion.weights[base_name(name)] == weight else
                                                     f"; weight {criterion.weights[base_name(name)]} vs {weight}")
        report.line(f"train_{name}", abs(ours - float(value)), tol, True, note,
                    ok=abs(ours - float(value)) <= tol and criterion.weights[base_name(name)] == weight)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unifusion_sam.uniref.reference_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="fixture folder: manifest.json, weights_rule.py, inputs_and_outputs.npz")
    parser.add_argument("--text-encoder", default=MINILM,
                        help=f"tokenizer / configuration of the fixture's text encoder (default {MINILM})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    for name in ("manifest.json", "weights_rule.py", "inputs_and_outputs.npz"):
        if not (args.folder / name).is_file():
            parser.error(f"{args.folder} has no {name}")
    if args.threads:
        torch.set_num_threads(args.threads)
    return 0 if run_check(args.folder, args.text_encoder) else 1


if __name__ == "__main__":
    sys.exit(main())
