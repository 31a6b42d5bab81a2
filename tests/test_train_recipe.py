"""The training recipe end to end: resume after SIGKILL, two processes, real dataset layouts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures_layouts import write_davis, write_fss1000, write_ref_youtube_vos, write_refcoco
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "train_sam_unifusion.py"
# small, deterministic settings: frozen text encoder without dropout, 64 px synthetic images, no
# stand-in pre-training of the random SAM (STAND_IN turns a 2-step one on)
FAST = [
    "--sam", "tiny", "--adapter", "sam-tiny",  # the random tiny ViT: the recipe's machinery, fast
    "--batch_size", "2", "--synthetic_image_size", "64", "--eval_samples", "0", "--tracker", "none",
    "--stand_in.steps", "0", "--num_workers", "0", "--warmup_steps", "2", "--deterministic", "true",
    "--mixed_precision", "no",  # float32 on every machine, whatever a config's default
    "--adapter_overrides", '{"text": {"trainable": false, "dropout": 0.0}, "fusion": {"head_dim": 8}}',
]
STAND_IN = ["--stand_in.steps", "2", "--stand_in.batch_size", "2"]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONHASHSEED="0")
    return env


def _run(args, **kw):
    return subprocess.run([sys.executable, str(RECIPE), *FAST, *args], env=_env(), capture_output=True,
                          text=True, timeout=600, **kw)


def _adapter(out: Path) -> dict:
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    steps = ["--max_steps", "8", "--save_every", "2", "--stage", "both", *STAND_IN]
    full = _run([*steps, "--output_dir", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr[-3000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(RECIPE), *FAST, *steps, "--output_dir", str(out)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not (latest.exists() and latest.read_text().strip() >= "step_0000004"):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "adapter").exists()
    resumed = _run([*steps, "--output_dir", str(out), "--resume", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert "pre-trained" not in resumed.stdout + resumed.stderr  # the stand-in SAM is read back, not redone
    a, b = _adapter(tmp_path / "full"), _adapter(out)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    common = ["--max_steps", "3", "--stage", "image", "--save_every", "100", *STAND_IN]
    single = _run([*common, "--grad_accum", "2", "--output_dir", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr[-3000:]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           str(RECIPE), *FAST, *common, "--output_dir", str(tmp_path / "two")]
    two = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    l1 = json.loads((tmp_path / "one" / "metrics.json").read_text())["final_loss_image"]
    l2 = json.loads((tmp_path / "two" / "metrics.json").read_text())["final_loss_image"]
    assert abs(l1 - l2) < 1e-5, (l1, l2)


@pytest.mark.slow
def test_trains_from_official_layouts(tmp_path):
    write_refcoco(tmp_path / "refer")
    write_fss1000(tmp_path / "fss", size=(24, 32))
    write_davis(tmp_path / "davis")
    write_ref_youtube_vos(tmp_path / "rytvos")
    config = {
        "output_dir": str(tmp_path / "out"), "sam": "tiny", "adapter": "sam-tiny", "stage": "both",
        "batch_size": 2, "eval_samples": 0, "tracker": "none", "num_workers": 0, "save_every": 100,
        "image": {"steps": 2, "lr": 1e-4, "data": [
            {"kind": "refcoco", "task": "ris", "ratio": 1, "root": str(tmp_path / "refer"), "split": "train",
             "options": {"dataset": "refcoco"}},
            {"kind": "fss1000", "task": "fss", "ratio": 1, "root": str(tmp_path / "fss"), "split": "all"},
        ]},
        "video": {"steps": 2, "lr": 1e-4, "train_text_encoder": False, "data": [
            {"kind": "davis2017", "task": "vos", "ratio": 1, "root": str(tmp_path / "davis"), "split": "train"},
            {"kind": "ref_youtube_vos", "task": "rvos", "ratio": 1, "root": str(tmp_path / "rytvos"), "split": "train"},
        ]},
    }
    path = tmp_path / "real.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config))
    run = subprocess.run([sys.executable, str(RECIPE), "--config", str(path)], env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert np.isfinite(metrics["final_loss_image"]) and np.isfinite(metrics["final_loss_video"])
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").exists()


def test_random_sam_is_saved_next_to_the_adapter(tmp_path):
    """With no SAM checkpoint the recipe keeps the random SAM it trained on, and the adapter loads onto it."""
    import torch
    from accelerate.utils import set_seed

    from unifusion_sam.sam import UniFusionSam, build_sam

    out = tmp_path / "run"
    proc = _run(["--output_dir", str(out), "--max_steps", "1", "--save_every", "1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = build_sam("tiny", checkpoint=out / "sam_tiny.safetensors")
    set_seed(0)  # the recipe's seed, set before it builds the SAM
    rebuilt = build_sam("tiny")
    for (name, a), b in zip(saved.state_dict().items(), rebuilt.state_dict().values()):
        if not name.startswith("mask_decoder."):  # the frozen parts (the decoder trained; the adapter holds it)
            assert torch.equal(a, b), name
    model = UniFusionSam.from_pretrained(out / "adapter", sam=saved)
    assert model.predict(np.zeros((64, 64, 3), np.uint8), text="the red circle").mask.shape == (64, 64)


def test_stand_in_pretrained_sam_is_saved_and_the_adapter_loads_onto_it(tmp_path):
    """With ``stand_in.steps`` the saved SAM is the seeded random one with a pre-trained image encoder; in
    bf16 (as ``mixed_precision: auto`` trains on an AMX CPU) the SAM is still saved in float32 and the
    held-out evaluation runs too."""
    import torch
    from accelerate.utils import set_seed

    from unifusion_sam.sam import UniFusionSam, build_sam

    out = tmp_path / "run"
    proc = _run(["--output_dir", str(out), "--max_steps", "1", "--save_every", "1", *STAND_IN,
                 "--mixed_precision", "bf16", "--eval_samples", "2", "--eval_videos", "1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stand-in SAM image encoder pre-trained for 2 steps" in proc.stdout
    assert "mixed precision: bf16 (bf16)" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(np.isfinite(metrics[k]) for k in ("final_loss_stand_in", "ris_miou", "fss_miou", "vos_jf", "rvos_jf"))
    saved = build_sam("tiny", checkpoint=out / "sam_tiny.safetensors")
    assert all(v.dtype == torch.float32 for v in saved.state_dict().values() if v.is_floating_point())
    set_seed(0)
    rebuilt = build_sam("tiny")
    changed = [n for (n, a), b in zip(saved.state_dict().items(), rebuilt.state_dict().values()) if not torch.equal(a, b)]
    assert any(n.startswith("image_encoder.") for n in changed)
    assert all(n.startswith(("image_encoder.", "mask_decoder.", "prompt_encoder.")) for n in changed), changed
    # the default's decoder term (stand_in.decoder_weight) trained the prompt encoder's point embeddings too
    assert any(n.startswith("prompt_encoder.point_embeddings.") for n in changed), changed
    model = UniFusionSam.from_pretrained(out / "adapter", sam=saved)
    assert model.predict(np.zeros((64, 64, 3), np.uint8), text="the red circle").mask.shape == (64, 64)
