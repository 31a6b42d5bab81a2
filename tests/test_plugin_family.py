"""A third model family, defined here and nowhere in the library, plugs into the core unchanged: it registers
with the family registry, trains for a few steps through the shared ``run``, is saved and reloaded through
the shared checkpoint base and the one loader, and gets ``predict`` / ``track`` from the shared inference."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unifusion_sam
from unifusion_sam.checkpoint import PretrainedMixin, render_card
from unifusion_sam.config import JsonConfig
from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
from unifusion_sam.encoders.text import TextFeatures
from unifusion_sam.families import ModelFamily, family_of_model, register_family, unregister_family
from unifusion_sam.fusion import ReferenceTokens
from unifusion_sam.inference import ReferenceInferenceMixin
from unifusion_sam.interface import Decoded, MaskReference, MaskResult, PreparedImage, ReferenceSegmenter
from unifusion_sam.training import RunConfig, StageConfig, run


@dataclass
class ToyConfig(JsonConfig):
    dim: int = 16
    size: int = 64


class ToyNet(PretrainedMixin, ReferenceInferenceMixin, nn.Module):
    """Unit-length features of a small conv net; an object's mask is the cosine similarity of each pixel to
    its prototype (the mean feature under its reference masks, plus a bag-of-characters sentence embedding),
    scaled and shifted: a tracker that follows what its references show."""

    family = "toy"
    config_class, config_name, weights_name, checkpoint_kind = ToyConfig, "toy_config.json", "toy.safetensors", "toy"

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.features = nn.Sequential(nn.Conv2d(3, config.dim, 3, padding=1), nn.ReLU(), nn.Conv2d(config.dim, config.dim, 1))
        self.chars = nn.EmbeddingBag(256, config.dim)
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.bias = nn.Parameter(torch.tensor(-5.0))

    @property
    def device(self) -> torch.device:
        return self.scale.device

    # ------------------------------------------------------------ the contract
    def prepare_image(self, rgb, task="ris", pad_to=None) -> PreparedImage:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
        s = self.config.size
        unit = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return PreparedImage(unit, (s, s), tuple(rgb.shape[:2]), unit)

    def prepare_mask(self, mask, prepared) -> torch.Tensor:
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        return F.interpolate(m, size=prepared.input_size, mode="nearest")[0, 0]

    def encode_frame(self, prepared) -> torch.Tensor:
        return F.normalize(self.features(prepared.pixels), dim=1)  # [1, D, S, S]

    def encode_text(self, texts) -> TextFeatures:
        pooled = torch.stack([self.chars(torch.tensor([list(t.encode()[:64]) or [0]])).squeeze(0) for t in texts])
        return TextFeatures(pooled[:, None], torch.zeros(len(texts), 1, dtype=torch.bool), pooled)

    def encode_masks(self, frames, prepared, masks) -> MaskReference:
        feats = torch.cat(list(frames)).expand(masks.shape[0], -1, -1, -1)
        w = masks[:, None]
        proto = (feats * w).sum((2, 3)) / w.sum((2, 3)).clamp(min=1)
        return MaskReference([ReferenceTokens(proto[:, None], proto[:, None])], proto)

    def decode_objects(self, frame, prepared, objects, *, task="ris", tracking=False, prompts=None) -> Decoded:
        protos = []
        for o in objects:
            p = torch.zeros(self.config.dim)
            if o.masks:
                p = p + torch.cat([m.prototype for m in o.masks]).mean(0)
            if o.text is not None:
                p = p + o.text.pooled[0]
            protos.append(p)
        protos = F.normalize(torch.stack(protos), dim=1)
        logits = self.scale * torch.einsum("nd,dhw->nhw", protos, frame[0])[:, None] + self.bias
        return Decoded(logits, logits.flatten(1).amax(1).sigmoid())

    def postprocess(self, decoded, prepared, task="ris") -> MaskResult:
        full = F.interpolate(decoded.logits, size=prepared.original_size, mode="bilinear", align_corners=False)[:, 0]
        return MaskResult(full.sigmoid(), full > 0, full)

    def encoder_version(self) -> float:
        return 0.0

    # ------------------------------------------------------------ training forward and checkpoints
    def forward(self, batch: dict) -> torch.Tensor:
        feats = F.normalize(self.features(batch["pixels"]), dim=1)
        refs = F.normalize(self.features(batch["ref_pixels"]), dim=1)
        w = batch["ref_masks"][:, None]
        proto = F.normalize((refs * w).sum((2, 3)) / w.sum((2, 3)).clamp(min=1), dim=1)
        return self.scale * torch.einsum("bd,bdhw->bhw", proto, feats) + self.bias

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def model_card(self, repo_id, tensors, metrics) -> str:
        return render_card({"library_name": "unifusion-sam"}, [f"# toy `{repo_id}`", json.dumps(dict(metrics))])

    @classmethod
    def _from_checkpoint(cls, config, state, metadata, **kwargs):
        model = cls(config)
        model.load_state_dict(state)
        return model


    @classmethod
    def from_pretrained(cls, source):
        return cls._load_pretrained(source, None, {})


class ToyFamily(ModelFamily):
    name, title = "toy", "toy model"
    config_name, weights_name, run_subdir = "toy_config.json", "toy.safetensors", "toy"

    def presets(self) -> list[str]:
        return ["toy-small"]

    def load(self, source, *, run_dir=None, revision=None, **options):
        return ToyNet.from_pretrained(source)

    def build(self, preset=None, **options):
        return ToyNet(ToyConfig()).eval()


@dataclass
class ToyTrainConfig(RunConfig):
    output_dir: str = "outputs/toy"
    image: StageConfig = field(default_factory=lambda: StageConfig(steps=6, lr=5e-2, data=[{"task": "fss"}]))
    video: StageConfig = field(default_factory=lambda: StageConfig(steps=6, lr=5e-2, data=[{"task": "vos"}]))


class ToySamplePrep:
    def __init__(self, size: int) -> None:
        self.size = size

    def _t(self, rgb) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)[0]

    def _m(self, mask) -> torch.Tensor:
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        return F.interpolate(m, size=(self.size, self.size), mode="nearest")[0, 0]

    def __call__(self, sample, rng, flip_prob):
        return {"task": sample.task, "pixels": self._t(sample.image), "target": self._m(sample.mask),
                "ref_pixels": self._t(sample.ref_images[0]), "ref_masks": self._m(sample.ref_masks[0])}


@dataclass
class ToyBatch:
    tensors: dict
    tasks: list = field(default_factory=list)


class ToyTrainFamily:
    tracker_project = "toy"

    def __init__(self, cfg: ToyTrainConfig) -> None:
        self.cfg, self.stages_started = cfg, []

    def build_model(self, accelerator):
        return ToyNet(ToyConfig()), {}

    def parameter_groups(self, model):
        return [{"params": list(model.parameters()), "lr": 1.0, "weight_decay": 0.0, "name": "main"}]

    def setup(self, accelerator, model):
        return []

    def sample_prep(self, stage_name, stage):
        return ToySamplePrep(ToyConfig().size)

    def collate(self, samples):
        return ToyBatch({k: torch.stack([s[k] for s in samples]) for k in ("pixels", "target", "ref_pixels", "ref_masks")},
                        [s["task"] for s in samples])

    def loss(self, model, batch):
        logits = model(batch.tensors)
        return {"loss": F.binary_cross_entropy_with_logits(logits, batch.tensors["target"])}

    def start_stage(self, model, stage_name, stage):
        self.stages_started.append(stage_name)

    def save(self, model, out: Path) -> None:
        model.save_pretrained(out / "toy")


@pytest.fixture
def toy_family():
    family = register_family(ToyFamily())
    yield family
    unregister_family("toy")


@pytest.fixture
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_toy_network_fits_the_contract():
    assert isinstance(ToyNet(ToyConfig()), ReferenceSegmenter)


def test_a_third_family_trains_saves_and_reloads_through_the_core(toy_family, tmp_path, fresh_accelerate_state):
    cfg = ToyTrainConfig(output_dir=str(tmp_path / "run"), batch_size=2, num_workers=0, tracker="none",
                         synthetic_image_size=48, eval_samples=2, eval_videos=1, warmup_steps=0, save_every=100)
    family = ToyTrainFamily(cfg)
    torch.manual_seed(0)
    untrained = ToyNet(ToyConfig()).state_dict()
    metrics = run(cfg, family)

    assert family.stages_started == ["image", "video"] and metrics["steps"] == 12
    out = tmp_path / "run"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["steps"] == 12 and {"ris_miou", "fss_miou", "vos_jf", "rvos_jf", "untrained"} <= set(saved)
    assert (out / "toy" / "toy.safetensors").is_file() and (out / "checkpoints" / "latest").is_file()

    # the one loader finds the run folder's checkpoint and the family that claims it
    model = unifusion_sam.from_pretrained(out)
    assert isinstance(model, ToyNet) and family_of_model(model) is toy_family
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, untrained[k])]
    assert changed, "training changed no weight"
    assert model.recorded_metrics["fss_miou"] == pytest.approx(saved["fss_miou"])
    assert unifusion_sam.load_model("none", preset="toy-small").config == ToyConfig()

    # the shared inference works on it: predict (few-shot) and track (VOS)
    videos = SyntheticDataset("heldout", "vos", 1, SyntheticConfig(seed=1000, image_size=(48, 48)))
    video = videos.video(0)
    labels = np.asarray(video.annotations[0])
    obj = int(labels.max())
    pred = model.predict(video.frames[1], ref_images=[video.frames[0]], ref_masks=[labels == obj])
    assert pred.mask.shape == labels.shape and 0.0 <= pred.score <= 1.0
    results = list(model.track(video.frames[:3], masks={obj: labels == obj}))
    assert [r.index for r in results] == [0, 1, 2] and np.array_equal(results[0].masks[obj], labels == obj)

    # saving again through the shared base round-trips exactly
    model.save_pretrained(tmp_path / "again")
    again = unifusion_sam.from_pretrained(tmp_path / "again")
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_an_unregistered_family_is_not_recognised(tmp_path):
    ToyNet(ToyConfig()).save_pretrained(tmp_path / "toy")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        unifusion_sam.from_pretrained(tmp_path / "toy")
    register_family(ToyFamily())
    try:
        with pytest.raises(ValueError, match="registered already"):
            register_family(ToyFamily())
    finally:
        unregister_family("toy")
