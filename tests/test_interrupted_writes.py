"""Interrupted writes (issue 34, item 4): a process killed with SIGKILL while it saves leaves the complete old
version or the complete new one, never a part or a mix.

The slow tests kill a saving process (:mod:`fixtures_writers`, a fork server) at random moments from fixed
seeds, then check that the target loads and equals version A or version B exactly (every file: config, weights
and their metadata, model card). The fast tests check the primitives of :mod:`unifusion_sam.checkpoint.io`.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_writers import TARGETS, signature
from safetensors.torch import load_file

from unifusion_sam.checkpoint import io as ckio
from unifusion_sam.checkpoint.io import atomic_write, atomic_write_file, atomic_write_text, replace_folder
from unifusion_sam.training.loop import resolve_resume, save_checkpoint

HELPER = Path(__file__).with_name("fixtures_writers.py")
# kills per kind (a JSON save spends ~1/3 of its time writing, the rest serialising: more kills) and the longest
# delay before one (a few saves' time on a 2-core machine)
ROUNDS = {"adapter": 10, "uniref": 8, "checkpoint": 8, "results": 20, "metrics": 20}
MAX_DELAY = {"adapter": 0.8, "uniref": 1.2, "checkpoint": 0.8, "results": 0.6, "metrics": 0.6}


class Server:
    """The fork server of :mod:`fixtures_writers`: ``kill(seconds)`` kills a saving child after that long."""

    def __init__(self, kind: str, workdir: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(HELPER.parents[1]), os.environ.get("PYTHONPATH", "")])}
        self.log = open(workdir.parent / f"{kind}-server.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, str(HELPER), kind, str(workdir)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        assert self._reply(180) == "ready"

    def _reply(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line:
            self.close()
            raise AssertionError(f"the writer server did not answer: {Path(self.log.name).read_text()[-3000:]}")
        return line

    def send(self, command: str, timeout: float = 60) -> str:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._reply(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _leftovers(workdir: Path, target: Path) -> list[Path]:
    """Temporary files or folders of interrupted saves (evidence that a kill landed mid-write), removed."""
    found = [p for p in workdir.iterdir() if p.name.startswith(f".{target.name}.")]
    for p in found:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return found


def _load(kind: str, target: Path) -> None:
    """Load the target as a user would (raises if it is not a complete checkpoint / JSON file)."""
    if kind == "adapter":
        from unifusion_sam.sam import UniFusionSam, build_sam

        UniFusionSam.from_pretrained(target, sam=build_sam("tiny"))
    elif kind == "uniref":
        import unifusion_sam

        unifusion_sam.from_pretrained(target)
    else:
        json.loads(target.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("kind, seed", [("adapter", 0), ("uniref", 1), ("results", 2), ("metrics", 3)])
def test_sigkill_while_saving_leaves_the_old_or_the_new_version(tmp_path, kind, seed):
    workdir = tmp_path / "work"
    server = Server(kind, workdir)
    try:
        versions = json.loads((workdir / "signatures.json").read_text())
        target = workdir / TARGETS[kind]
        rng = random.Random(seed)
        mid_write, saves = 0, []
        for i in range(ROUNDS[kind]):
            reply = server.send(f"kill {rng.uniform(0.02, MAX_DELAY[kind]):.3f}")
            assert reply.startswith("killed"), f"round {i}: {reply}"
            saves.append(int(reply.split()[1]))
            found = signature(target)
            assert found in versions, f"round {i}: {target} is neither version A nor B: {found} vs {versions}"
            _load(kind, target)
            mid_write += bool(_leftovers(workdir, target))
        assert mid_write >= 1, f"no kill landed inside a save (saves completed per round: {saves})"
    finally:
        server.close()


@pytest.mark.slow
def test_sigkill_while_saving_a_training_checkpoint_leaves_latest_complete(tmp_path):
    workdir = tmp_path / "work"
    server = Server("checkpoint", workdir)
    try:
        files = json.loads((workdir / "signatures.json").read_text())[0]
        ckpts = workdir / TARGETS["checkpoint"] / "checkpoints"
        rng = random.Random(4)
        mid_write = 0
        for i in range(ROUNDS["checkpoint"]):
            reply = server.send(f"kill {rng.uniform(0.02, MAX_DELAY['checkpoint']):.3f}")
            assert reply.startswith("killed"), f"round {i}: {reply}"
            for folder in sorted(ckpts.glob("step_*")):  # every visible step folder is complete and consistent
                step = int(folder.name.split("_")[1])
                assert sorted(os.listdir(folder)) == files, f"round {i}: {folder} is incomplete"
                assert json.loads((folder / "train_state.json").read_text()) == {"global_step": step}
                values = {float(v) for t in load_file(str(folder / "model.safetensors")).values() for v in t.unique()}
                assert values in ({10.0 * step}, {10.0 * step + 1}), f"round {i}: {folder} mixes {values}"
                torch.load(folder / "optimizer.bin", weights_only=True)
            latest = (ckpts / "latest").read_text()
            assert (ckpts / latest).is_dir(), f"round {i}: latest names {latest}, which does not exist"
            step, *values = server.send("resume").split()[1:]  # what --resume latest restores
            assert int(step) == int(latest.split("_")[1]) and len(values) == 1
            assert float(values[0]) in (10.0 * int(step), 10.0 * int(step) + 1)
            stale = list(ckpts.glob(".tmp_*"))
            mid_write += bool(stale)
            for p in stale:  # as the next save would
                shutil.rmtree(p)
        assert mid_write >= 1, "no kill landed inside a save"
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------- fast: the primitives
def _write(files: dict[str, str]):
    def write(folder: Path) -> list[str]:
        for name, text in files.items():
            (folder / name).write_text(text)
        return list(files)
    return write


def _contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_atomic_write_swaps_the_whole_folder_and_keeps_other_files(tmp_path):
    target = tmp_path / "ckpt"
    atomic_write(target, _write({"config.json": "A", "weights": "A"}))
    (target / "notes.txt").write_text("mine")
    before = os.stat(target).st_ino
    atomic_write(target, _write({"config.json": "B", "weights": "B"}))
    assert _contents(target) == {"config.json": "B", "notes.txt": "mine", "weights": "B"}
    assert os.stat(target).st_ino != before  # a new folder, swapped in one step (not files replaced one by one)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary left


def test_atomic_write_without_an_exchange_still_never_mixes(tmp_path, monkeypatch):
    """Where renameat2 is missing the old folder is renamed aside first: the target is old or new, never mixed."""
    monkeypatch.setattr(ckio, "exchange", lambda a, b: False)
    target = tmp_path / "ckpt"
    atomic_write(target, _write({"a": "1", "b": "1"}))
    atomic_write(target, _write({"a": "2", "b": "2"}))
    assert _contents(target) == {"a": "2", "b": "2"} and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_failure_inside_write_leaves_the_old_folder(tmp_path):
    target = tmp_path / "ckpt"
    atomic_write(target, _write({"a": "1"}))

    def failing(folder: Path) -> list[str]:
        (folder / "a").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert _contents(target) == {"a": "1"} and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_working_folder_with_sub_folders_is_updated_file_by_file(tmp_path):
    target = tmp_path / "work"
    (target / "data").mkdir(parents=True)
    (target / "data" / "big.bin").write_text("kept")
    inode = os.stat(target).st_ino
    atomic_write(target, _write({"config.json": "B"}))
    assert os.stat(target).st_ino == inode and (target / "data" / "big.bin").read_text() == "kept"
    assert (target / "config.json").read_text() == "B" and sorted(p.name for p in target.iterdir()) == ["config.json", "data"]


def test_a_symlinked_checkpoint_folder_is_written_through(tmp_path):
    real = tmp_path / "real"
    atomic_write(real, _write({"a": "1"}))
    os.symlink(real, tmp_path / "link")
    atomic_write(tmp_path / "link", _write({"a": "2"}))
    assert (tmp_path / "link").is_symlink() and _contents(real) == {"a": "2"}


def test_replace_folder_puts_a_new_folder_in_place(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("x")
    replace_folder(tmp_path / "new", tmp_path / "target")
    assert _contents(tmp_path / "target") == {"f": "x"} and not (tmp_path / "new").exists()


def test_atomic_write_file_keeps_the_old_file_on_error(tmp_path):
    path = atomic_write_text(tmp_path / "results.json", '{"v": 1}')

    def failing(tmp: Path) -> None:
        tmp.write_text('{"v": ')
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write_file(path, failing)
    assert path.read_text() == '{"v": 1}' and [p.name for p in tmp_path.iterdir()] == ["results.json"]
    with pytest.raises(IsADirectoryError, match="is a folder"):
        atomic_write_text(tmp_path, "x")


class FakeAccelerator:
    """What :func:`save_checkpoint` uses of an ``Accelerator``: one process, ``save_state`` writing a file."""

    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_text("weights")


def test_save_checkpoint_prunes_older_steps_but_never_the_one_just_saved(tmp_path):
    acc = FakeAccelerator()
    for step in (10, 20, 30):
        save_checkpoint(acc, tmp_path, step, keep=2)
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_0000020", "step_0000030"]
    save_checkpoint(acc, tmp_path, 15, keep=2)  # resumed from an older checkpoint: its steps come after 30's
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_0000015", "step_0000030"]
    assert resolve_resume(tmp_path, "latest") == ckpts / "step_0000015"
    save_checkpoint(acc, tmp_path, 15, keep=2)  # saved again: swapped in place
    assert json.loads((ckpts / "step_0000015" / "train_state.json").read_text()) == {"global_step": 15}


def test_resume_latest_naming_an_incomplete_folder_is_refused(tmp_path):
    save_checkpoint(FakeAccelerator(), tmp_path, 5, keep=0)
    (tmp_path / "checkpoints" / "step_0000005" / "train_state.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint folder"):
        resolve_resume(tmp_path, "latest")
