"""A fork server that saves in a loop and is killed with SIGKILL mid-write, for ``test_interrupted_writes.py``.

``python tests/fixtures_writers.py KIND WORKDIR`` builds two versions (A and B) of one kind of saved object,
saves each into its target once (the target then holds B: the "old" version), writes their signatures to
``WORKDIR/signatures.json`` and prints ``ready``. Then, for each ``kill SECONDS`` line read from stdin, it forks
a child that saves A, B, A, B ... into the target without pause, SIGKILLs it after ``SECONDS``, reaps it and
prints ``killed SAVES_STARTED`` (``died CODE`` if the child failed by itself). Forking from one prepared process
makes each kill cost milliseconds instead of an interpreter start; the server runs torch on one thread, so
forking it is safe.

Kinds: ``adapter`` (``UniFusionSam.save_pretrained``; A and B differ in configuration, weights and metrics),
``uniref`` (``UniRefSegmenter.save_pretrained``, what ``convert_authors_checkpoint`` writes with),
``checkpoint`` (the training loop's ``save_checkpoint``: step folders, ``latest``, pruning), ``results`` (an
evaluation's ``write_json``) and ``metrics`` (``atomic_write_text``, as the run writes ``metrics.json``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

TARGETS = {"adapter": "adapter", "uniref": "model", "checkpoint": "run", "results": "results.json",
           "metrics": "metrics.json"}


def signature(path: Path) -> dict[str, str]:
    """``{file name: digest}`` of a file or of a folder's files; a safetensors file by its tensors and metadata
    (its bytes are not reproducible: the metadata's order varies)."""
    import torch
    from safetensors import safe_open

    files = sorted(path.iterdir()) if path.is_dir() else [path]
    out = {}
    for f in files:
        h = hashlib.sha256()
        if f.name.endswith(".safetensors"):
            with safe_open(str(f), "pt") as st:
                h.update(json.dumps(sorted((st.metadata() or {}).items())).encode())
                for key in sorted(st.keys()):
                    t = st.get_tensor(key).contiguous()
                    h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
                    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(f.read_bytes())
        out[f.name] = h.hexdigest()
    return out


def results_version(v: int) -> dict:
    """A large results file (about 20 MB of JSON, quick to serialise), different for each version."""
    return {"version": v, "per_sequence": {f"video{i:03d}": {"J": (i * 7 + v) % 101 / 100, "log": f"{v}" * 200_000}
                                           for i in range(100)}}


def _savers(kind: str, workdir: Path):
    """``[save_version_a, save_version_b]`` for ``kind``."""
    import torch

    target = workdir / TARGETS[kind]
    if kind == "adapter":
        from unifusion_sam.sam import build_sam, wrap_sam

        models = []
        for v, overrides in enumerate([{}, {"fusion": {"head_dim": 32}}]):
            torch.manual_seed(v)
            model = wrap_sam(build_sam("tiny"), text=None, **overrides)
            model.record_metrics({"version": float(v)})
            models.append(model)
        return [lambda m=m: m.save_pretrained(target) for m in models]
    if kind == "uniref":
        from unifusion_sam.uniref import build_uniref

        models = []
        for v, queries in enumerate([20, 30]):
            torch.manual_seed(v)
            model = build_uniref("uniref-small", text=None, num_queries=queries)
            model.record_metrics({"version": float(v)})
            models.append(model)
        return [lambda m=m: m.save_pretrained(target) for m in models]
    if kind == "checkpoint":
        from accelerate import Accelerator

        from unifusion_sam.training.loop import save_checkpoint

        accelerator = Accelerator(cpu=True)
        model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.Linear(1024, 512))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model, optimizer = accelerator.prepare(model, optimizer)
        _STATE.update(accelerator=accelerator, model=model)
        count = iter(range(10**9))

        def save():  # step folders 1, 1, 2, 2, ...: the first save of a step is new, the second replaces it
            i = next(count)
            step = i // 2 + 1
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(10 * step + i % 2)
            save_checkpoint(accelerator, target, step, keep=2)

        return [save, save]
    from unifusion_sam.checkpoint.io import atomic_write_text
    from unifusion_sam.evaluation import write_json

    if kind == "results":
        return [lambda v=v: write_json(target, results_version(v)) for v in range(2)]
    return [lambda v=v: atomic_write_text(target, json.dumps(results_version(v), indent=2)) for v in range(2)]


_STATE: dict = {}


def resume_latest(run: Path) -> str:
    """``STEP VALUE``: the step ``load_resume_state(..., "latest")`` restores and the weights' value then."""
    from unifusion_sam.training.loop import load_resume_state

    accelerator, model = _STATE["accelerator"], _STATE["model"]
    with contextlib.redirect_stdout(sys.stderr):  # accelerate prints "resumed from ...": stdout is the protocol
        step = load_resume_state(accelerator, run, "latest")
    values = {float(v) for p in model.parameters() for v in p.detach().unique()}
    return f"{step} {' '.join(f'{v:g}' for v in sorted(values))}"


def serve(kind: str, workdir: Path) -> None:
    import torch

    torch.set_num_threads(1)
    workdir.mkdir(parents=True, exist_ok=True)
    savers = _savers(kind, workdir)
    target = workdir / TARGETS[kind]
    signatures = []
    for save in savers:
        save()
        if kind == "checkpoint":  # the files of a complete step folder
            signatures.append(sorted(os.listdir(target / "checkpoints" / (target / "checkpoints" / "latest").read_text())))
        else:
            signatures.append(signature(target))
    (workdir / "signatures.json").write_text(json.dumps(signatures))
    print("ready", flush=True)
    done = workdir / "saves_done"
    for line in sys.stdin:
        if line.startswith("resume"):  # the checkpoint kind: what --resume latest restores
            print(f"resumed {resume_latest(workdir / TARGETS[kind])}", flush=True)
            continue
        delay = float(line.split()[1])
        done.write_text("0")
        pid = os.fork()
        if pid == 0:  # the child: save until killed
            try:
                i = 0
                while True:
                    savers[i % 2]()
                    i += 1
                    done.write_text(str(i))
            except BaseException as exc:  # noqa: BLE001 - reported through the exit code
                print(f"child failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                os._exit(3)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            print(f"killed {done.read_text() or 0}", flush=True)
        else:
            print(f"died {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    serve(sys.argv[1], Path(sys.argv[2]))
