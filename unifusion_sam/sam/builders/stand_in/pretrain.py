"""Pre-training of a random stand-in SAM's image encoder on the library's synthetic scenes.

The adapter is built for a *pretrained* SAM whose frozen image encoder already describes what is in
each patch. A randomly initialised tiny SAM (the offline default run, the tests) does not: a linear
probe on its frozen embeddings recovers the colour of 94% of the foreground patches but the shape
class of only 15% (chance: 1 in 6), so few-shot segmentation by shape class and sentences with
shape words have little to work with (after the default run's 200 steps below: colour 98%, shape
27%; ``benchmarks/stand_in_features.py``). Before wrapping, the recipe can therefore give the random
encoder SAM-like features in a short supervised pre-training on synthetic scenes of the training
split (never the held-out one):

- per-location shape class and colour (soft targets: the share of each class in each cell of a
  grid twice as fine as the embedding, so the embedding also learns where edges run inside a patch);
- an instance embedding in which the cells of one object are close to their object's mean and far
  from the other objects' (what tracking and few-shot matching need).

Only the image encoder trains (for a custom encoder such as the EfficientNet-Lite0 stand-in, only what
its ``trainable_stand_in()`` returns: the neck on top of the frozen ImageNet backbone); the small head
that reads the targets out of the embedding is thrown away. With ``decoder_weight`` > 0 SAM's prompt
encoder and mask decoder train too, on SAM's own task: the mask of a random object from one positive
point inside it (:func:`point_prompt_loss`), so the wrapped SAM's decoder starts on a real SAM's
task instead of from random weights (the default run's 100 steps only begin it: a one-point IoU of
about 0.18 on held-out scenes). Users with a real SAM checkpoint skip this: their SAM is pretrained
already.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ....data.synthetic import SyntheticConfig, SyntheticDataset
from ....data.synthetic.shapes import COLOURS, SHAPE_CLASSES
from ....losses import LossWeights, bce_loss, dice_loss, upsample_logits
from ...backends import SamTransform, make_backend
from .config import StandInConfig

MAX_INSTANCES = 8  # object ids above this share the last instance slot


@dataclass
class Targets:
    """Per-cell targets of a batch: ``colour`` ``[B, 1 + colours, g, g]``, ``shape`` ``[B, 1 + shapes, g, g]``
    and ``objects`` ``[B, 1 + MAX_INSTANCES, g, g]``: the share of each class (slot 0 = background) in
    each cell; ``valid`` ``[B, g, g]``: the share of the cell inside the image (0 on padding)."""

    colour: torch.Tensor
    shape: torch.Tensor
    objects: torch.Tensor
    valid: torch.Tensor


class SceneTargets(torch.utils.data.Dataset):
    """Synthetic scenes as ``(pixels [3, S, S], colour, shape, objects, valid)``: SAM-normalised, padded
    pixels and the per-cell shares of :class:`Targets` (unbatched), computed on the original label map
    and laid out like the resized, padded image. ``cell``: the target cell's side in input pixels (half
    the embedding's stride: a grid twice as fine as the embedding)."""

    def __init__(self, dataset: SyntheticDataset, transform, length: int, cell: int = 8) -> None:
        self.dataset, self.transform, self.length, self.cell = dataset, transform, length, cell
        self.colours = {c: i + 1 for i, c in enumerate(COLOURS)}
        self.shapes = {s: i + 1 for i, s in enumerate(SHAPE_CLASSES)}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        """``(pixels, colour, shape, objects, valid, point [2], object mask [S, S])``: the last two are a
        random object of the scene and a point inside it (input-frame pixels), for the decoder term."""
        rec = self.dataset.scene(i % len(self.dataset))
        ids = rec.meta["label_map"].astype(np.int64)
        colour = np.zeros(ids.max() + 1, np.int64)
        shape = np.zeros(ids.max() + 1, np.int64)
        for obj in rec.meta["objects"]:
            colour[obj["id"]] = self.colours[obj["colour"]]
            shape[obj["id"]] = self.shapes[obj["shape"]]
        prepared = self.transform.image(rec.image)
        size = prepared.pixels.shape[-1]
        grid = size // self.cell
        h, w = (max(1, round(s / self.cell)) for s in prepared.input_size)
        out = []
        for labels, n in ((colour[ids], len(COLOURS) + 1), (shape[ids], len(SHAPE_CLASSES) + 1),
                          (np.minimum(ids, MAX_INSTANCES), MAX_INSTANCES + 1), (np.ones_like(ids), 2)):
            onehot = F.one_hot(torch.from_numpy(labels), n).permute(2, 0, 1).float()
            share = F.adaptive_avg_pool2d(onehot[None], (h, w))[0]
            out.append(F.pad(share, (0, grid - w, 0, grid - h)))
        rng = np.random.default_rng(i)
        present = [k for k in np.unique(ids) if k > 0]
        obj = int(present[rng.integers(len(present))]) if present else 0
        ys, xs = np.nonzero(ids == obj)
        j = int(rng.integers(len(ys)))
        point = self.transform.coords(np.array([[xs[j], ys[j]]]), ids.shape)[0]
        target = self.transform.mask(ids == obj if present else np.zeros_like(ids, bool))[0]
        return (prepared.pixels[0], out[0], out[1], out[2], out[3][1],
                torch.as_tensor(point, dtype=torch.float), target)


class DenseHead(nn.Module):
    """Reads colour logits, shape logits and an instance embedding out of a ``[B, C, h, w]`` SAM
    embedding at ``[B, *, 2h, 2w]``."""

    def __init__(self, in_dim: int, embed_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.num_colours, self.num_shapes = len(COLOURS) + 1, len(SHAPE_CLASSES) + 1
        self.up = nn.ConvTranspose2d(in_dim, hidden, kernel_size=2, stride=2)
        self.out = nn.Conv2d(hidden, self.num_colours + self.num_shapes + embed_dim, kernel_size=1)

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.out(F.gelu(self.up(embeddings)))
        c, s = self.num_colours, self.num_shapes
        return x[:, :c], x[:, c:c + s], F.normalize(x[:, c + s:], dim=1)


def stand_in_loss(head: DenseHead, embeddings: torch.Tensor, targets: Targets, temperature: float) -> torch.Tensor:
    """Soft cross-entropy of colour and shape per cell plus an instance-discrimination term (each
    cell's embedding closest to its own object's mean), averaged over the cells inside the image.

    ``embeddings`` ``[B, C, h, w]``; ``targets`` at ``[2h, 2w]`` (see :class:`Targets`)."""
    colour_logits, shape_logits, inst = head(embeddings)
    valid = targets.valid
    total = valid.sum().clamp(min=1e-6)
    loss = embeddings.new_zeros(())
    for logits, share in ((colour_logits, targets.colour), (shape_logits, targets.shape)):
        loss = loss + (-(share * F.log_softmax(logits, dim=1)).sum(1) * valid).sum() / total
    objects = targets.objects
    weights = objects / objects.sum(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    centres = F.normalize(torch.einsum("bchw,bkhw->bkc", inst, weights), dim=2)  # [B, K, E]
    sim = torch.einsum("bchw,bkc->bkhw", inst, centres) / temperature
    present = objects.sum(dim=(2, 3)) > 0  # [B, K]
    sim = sim.masked_fill(~present[:, :, None, None], -1e4)
    return loss + (-(objects * F.log_softmax(sim, dim=1)).sum(1) * valid).sum() / total


def point_prompt_loss(sam: nn.Module, embeddings: torch.Tensor, points: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
    """BCE + Dice (the adapter's mask loss) of SAM's single-mask prediction for one positive point per
    image: ``embeddings`` ``[B, D, h, w]`` (the image encoder's output, high-resolution maps included), ``points`` ``[B, 2]`` and object masks ``[B, S, S]`` in the
    input frame."""
    backend = make_backend(sam)
    labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
    sparse, dense = backend.embed_prompts(points[:, None], labels, None, points.shape[0])
    logits, _ = backend.decode(backend.image_embedding(embeddings), sparse, dense,
                               extras=backend.decoder_inputs(embeddings))
    full = upsample_logits(logits, tuple(targets.shape[-2:]))
    w = LossWeights()
    return w.bce * bce_loss(full, targets).mean() + w.dice * dice_loss(full, targets).mean()


def pretrain_image_encoder(
    sam: nn.Module,
    synthetic: SyntheticConfig,
    config: StandInConfig,
    *,
    num_workers: int = 1,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> list[float]:
    """Train the image encoder of ``sam`` (a ``segment_anything`` ``Sam``, before wrapping) in place on
    ``config.steps`` batches of training-split synthetic scenes (see the module docstring), and with
    ``config.decoder_weight`` its prompt encoder and mask decoder; returns the loss of every step. Seed
    torch beforehand for a reproducible result. What trained is left frozen and in eval mode.
    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward passes under ``torch.autocast``."""
    from segment_anything.modeling import Sam

    if not isinstance(sam, Sam):
        raise TypeError(f"stand-in pre-training needs a segment_anything Sam (build_sam), got {type(sam).__name__} "
                        "(for a SAM 2 or a transformers SAM set stand_in.steps to 0)")
    if config.steps == 0:
        return []
    # the loader's workers prepare images on the CPU, wherever the SAM lives
    transform = SamTransform(sam.image_encoder.img_size, sam.pixel_mean.cpu(), sam.pixel_std.cpu())
    encoder = sam.image_encoder
    # a custom encoder names what may train (the Lite0 stand-in: its neck; its pretrained backbone stays
    # frozen, BatchNorm in eval mode); a ViT trains whole
    parts = encoder.trainable_stand_in() if hasattr(encoder, "trainable_stand_in") else [encoder]
    encoder.train()
    for part in parts:
        part.requires_grad_(True)
    head = DenseHead(encoder.neck[0].out_channels, config.embed_dim)  # the neck's width (256 in every SAM)
    scenes = SyntheticDataset("train", "ris", 4000, synthetic)
    cell = sam.image_encoder.img_size // sam.prompt_encoder.image_embedding_size[0] // 2
    loader = torch.utils.data.DataLoader(
        SceneTargets(scenes, transform, config.steps * config.batch_size, cell), batch_size=config.batch_size,
        num_workers=num_workers,
    )
    device = next(encoder.parameters()).device
    backend = make_backend(sam)
    head.to(device)
    decoder = [sam.prompt_encoder, sam.mask_decoder] if config.decoder_weight > 0 else []
    for part in decoder:
        part.requires_grad_(True)
        part.train()
    params = [p for part in parts + decoder for p in part.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    losses: list[float] = []
    bar = tqdm(loader, total=config.steps, desc="pretrain stand-in SAM encoder", disable=not progress, leave=False)
    for pixels, *shares, points, masks in bar:
        targets = Targets(*(t.to(device) for t in shares))
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            embeddings = encoder(pixels.to(device))  # [B, D, h, w]: the embedding (+ packed high-res maps)
            loss = stand_in_loss(head, backend.image_embedding(embeddings), targets, config.temperature)
            if decoder:
                loss = loss + config.decoder_weight * point_prompt_loss(sam, embeddings, points.to(device), masks.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    optimizer.zero_grad(set_to_none=True)  # no stale gradients for whoever trains the decoder next
    for part in [encoder, *decoder]:
        part.requires_grad_(False)
        part.eval()
    return losses
