"""Load test of the web demo: start ``unifusion-sam demo`` on 127.0.0.1, send it minutes of mixed traffic from
concurrent users (``gradio_client`` threads, loopback only), stop it, and report.

Each user visits the page again and again (a new session every few visits) and does one thing per visit on one
of the four tabs (a sentence, examples, clicked points, a video tracked to the end or paused, corrected and
resumed), a third of the visits with a bad upload (:mod:`unifusion_sam.demo.samples`: a corrupt image, image
bombs, a mask of the wrong size, zip-slip, a zip bomb, a non-zip ``.zip``, a zip without images, a file over the
upload limit). Bounded by time and a request count, each request by a timeout; then a burst of more
simultaneous requests than the queue holds. The report: requests, results, clear errors and failures by kind,
p50 / p95 latency per tab, the server's resident memory (``VmRSS``) after the warm-up and after the run (goal:
ratio <= 1.2), whether the server is still alive, and the settings used.

    python benchmarks/demo_load.py                       # 8 users, 180 s, the untrained tiny SAM
    python benchmarks/demo_load.py --default-run --json load.json   # the model in outputs/default
    python benchmarks/demo_load.py --users 2 --duration 20 --max-requests 12 --warmup 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np

LOOPBACK = "127.0.0.1"
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy for loopback
# what a clear error says, by kind (the first that matches)
CLASSES = [("zip_slip", r"climbs out of its folder|is an absolute path|names a drive|symbolic link"),
           ("zip_bomb", r"expands to|max_unzipped_mb|max_zip_members"),
           ("too_many_pixels", r"max_image_pixels"),
           ("upload_too_large", r"max_upload_mb|maximum allowed size|File size exceeded"),
           ("not_a_zip", r"not a readable zip"),
           ("zip_without_images", r"holds no frame images"),
           ("mask_size", r"pixels but its (image|video) is"),
           ("not_an_image", r"not an image this demo can decode|cannot decode"),
           ("queue_full", r"[Qq]ueue is full"),
           ("paused_video_closed", r"paused video was closed"),
           ("missing_input", r"first|Type a sentence|Add at least one example|Nothing is paused|Click on the object")]


def classify(message: str) -> str:
    return next((kind for kind, pattern in CLASSES if re.search(pattern, message)), "other")


# ----------------------------------------------------------------------------------------- traffic
def scenarios(f: dict[str, Path], url: str) -> list[tuple[str, float, list]]:
    """``(name, weight, steps)``; a step is ``(tab, name, expected kind, call(client) -> future)``."""
    from gradio_client import handle_file

    def up(name):
        return handle_file(str(f[name]))

    def api(name, *inputs, event=None):  # inputs named after a sample are uploaded
        if event is None:
            return lambda c: c.submit(*[up(i) if i in f else i for i in inputs], api_name=name)
        return lambda c: _with_event(c, name, [up(i) if i in f else i for i in inputs], event)

    def examples(mask):  # example 1: the scene (its editor value) and an uploaded mask
        return lambda c: c.submit(up("scene"), {"background": up("scene"), "layers": [], "composite": None, "id": None},
                                  None, None, up(mask), None, None, api_name="/examples")

    S, E, P, V = "Sentence", "Examples", "Points", "Video"
    click = {"index": [60, 70], "value": None, "selected": True}
    return [
        ("sentence", 4, [(S, "sentence", "result", api("/sentence", "scene", "the shape on the left"))]),
        ("sentence, corrupt image", 1, [(S, "corrupt", "not_an_image", api("/sentence", "corrupt", "x"))]),
        ("sentence, image bomb", 1, [(S, "bomb", "too_many_pixels", api("/sentence", "bomb", "x"))]),
        ("sentence, huge image bomb", 1, [(S, "huge bomb", "too_many_pixels", api("/sentence", "huge_bomb", "x"))]),
        ("sentence, no sentence", 1, [(S, "no sentence", "missing_input", api("/sentence", "scene", "  "))]),
        ("examples", 3, [(E, "examples", "result", examples("mask"))]),
        ("examples, wrong mask", 1, [(E, "wrong mask", "mask_size", examples("wrong_mask"))]),
        ("points", 3, [(P, "clear", "result", api("/points_clear")),
                       (P, "click +", "result", api("/points_click", "scene", "positive", "", event=click)),
                       (P, "click -", "result", api("/points_click", "scene", "negative", "",
                                                    event={**click, "index": [20, 20]})),
                       (P, "undo", "result", api("/points_undo", "scene", ""))]),
        ("points, no image", 1, [(P, "no image", "missing_input", api("/points_click", None, "positive", "",
                                                                       event=click))]),
        ("video", 2, [(V, "upload", "result", api("/video_upload", "clip")),
                      (V, "track", "result", api("/video_track", "clip", None, "first", "", ""))]),
        ("video, pause", 2, [(V, "track to 1", "result", api("/video_track", "clip", None, "first", "", "1")),
                             (V, "click", "result", api("/video_click", 1, "positive", event=click)),
                             (V, "resume", "result", api("/video_resume", ""))]),
        ("video, zip-slip", 1, [(V, "zip-slip", "zip_slip", api("/video_upload", "slip"))]),
        ("video, zip bomb", 1, [(V, "zip bomb", "zip_bomb", api("/video_upload", "zip_bomb"))]),
        ("video, not a zip", 1, [(V, "not a zip", "not_a_zip", api("/video_upload", "not_zip"))]),
        ("video, no images", 1, [(V, "no images", "zip_without_images", api("/video_upload", "no_images"))]),
        ("video, oversized", 1, [(V, "oversized", "upload_too_large", lambda c: c.executor.submit(_post_upload, url,
                                                                                                  f["oversized"]))]),
    ]


def _with_event(client, api_name: str, inputs: list, event: dict):
    """A select event (a click at ``event["index"]``) through ``gradio_client``'s endpoint, which sends what the
    page sends; ``Client.submit`` has no way to pass event data."""
    index = client._infer_fn_index(api_name, None)
    call = client.endpoints[index].make_end_to_end_fn(client.new_helper(index))
    return client.executor.submit(call, *inputs, event_data=event)


def _post_upload(url: str, path: Path) -> tuple:
    """The upload a page makes before a request, straight to the server (``gradio_client`` refuses a file over the
    limit itself); a 413 is its clear error."""
    import httpx

    with open(path, "rb") as data:
        httpx.post(url + "gradio_api/upload", files={"files": (path.name, data)}, timeout=120).raise_for_status()
    return ("uploaded",)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=8, help="concurrent users (threads)")
    p.add_argument("--duration", type=float, default=180.0, help="seconds of load after the warm-up")
    p.add_argument("--max-requests", type=int, default=5000, help="stop after this many requests in all")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds of concurrent warm-up (after one of each)")
    p.add_argument("--burst", type=int, default=None, help="simultaneous requests at the end (default queue + 8)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    p.add_argument("--visits", type=int, default=5, help="visits before a user opens a new session")
    p.add_argument("--checkpoint", default="none", help="the model (--checkpoint of unifusion-sam demo)")
    p.add_argument("--sam", default="tiny", help="--sam of unifusion-sam demo (with --checkpoint none)")
    p.add_argument("--default-run", action="store_true", help="serve outputs/default (make demo's model) instead")
    p.add_argument("--demo-config", type=Path, default=None, help="a DemoConfig JSON for the server (default: defaults)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the report here as JSON")
    p.add_argument("--keep", type=Path, default=None, help="keep the inputs and the server's log in this folder")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    """The process's resident memory (``VmRSS``) in MiB, ``None`` once it is gone."""
    try:
        found = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return None
    return round(int(found.group(1)) / 1024, 1) if found else None


def start_server(args, port: int, work: Path, config_path: Path) -> subprocess.Popen:
    model = ["--checkpoint", "outputs/default"] if args.default_run else ["--checkpoint", args.checkpoint, "--sam", args.sam]
    if args.default_run and not Path("outputs/default").is_dir():
        raise SystemExit("--default-run: outputs/default does not exist (make demo trains it)")
    command = [sys.executable, "-m", "unifusion_sam", "demo", "--host", LOOPBACK, "--port", str(port), "--device", "cpu",
               *model, "--demo-config", str(config_path)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(work / "gradio"),
           "NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK, "PYTHONUNBUFFERED": "1"}
    log = open(work / "server.log", "wb")  # noqa: SIM115 - the server writes it until it stops
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 300.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if server.poll() is not None:
            raise RuntimeError(f"the demo server exited with status {server.returncode} before answering")
        try:
            with LOCAL.open(url + "config", timeout=5) as reply:
                if reply.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the demo server did not answer {url} within {timeout:.0f} s")


def stop_server(server: subprocess.Popen) -> int:
    for stop, wait in ((server.send_signal, 20), (lambda _: server.kill(), 10)):  # Ctrl-C first, as a user would
        if server.poll() is None:
            stop(signal.SIGINT)
            try:
                server.wait(wait)
            except subprocess.TimeoutExpired:
                pass
    return server.returncode


class Load:
    """The shared request budget and every request's record."""

    def __init__(self, max_requests: int, deadline: float) -> None:
        self.left, self.deadline, self.lock, self.records = max_requests, deadline, threading.Lock(), []

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0 or time.perf_counter() > self.deadline:
                return False
            self.left -= 1
            return True

    def add(self, record: dict) -> None:
        with self.lock:
            self.records.append(record)


def new_client(url: str, timeout: float):
    from gradio_client import Client  # noqa: PLC0415 - only the load test needs it

    return Client(url, verbose=False, download_files=False, max_workers=4, httpx_kwargs={"timeout": timeout})


def run_step(client, step, timeout: float) -> dict:
    """One request: ``{"tab", "step", "expected", "outcome" (result / error / failed), "kind", "seconds"}``."""
    tab, name, expected, call = step
    start = time.perf_counter()
    try:
        outputs = call(client).result(timeout=timeout)
        status = outputs[-1] if isinstance(outputs, (tuple, list)) else outputs
        if isinstance(status, str) and status.startswith("⚠"):
            outcome, kind, message = "error", classify(status), status
        else:
            outcome, kind, message = "result", "result", str(status)[:80]
    except FutureTimeout:
        outcome, kind, message = "failed", "timeout", f"no answer within {timeout:.0f} s"
    except Exception as exc:  # noqa: BLE001 - every way a request can go wrong is counted, by kind
        outcome, kind, message = answered_error(exc)
    return {"tab": tab, "step": name, "expected": expected, "outcome": outcome, "kind": kind,
            "seconds": time.perf_counter() - start, "message": message[:300]}


def answered_error(exc: Exception) -> tuple[str, str, str]:
    """A request that raised: a clear error (a message that says what was wrong), or a failure (by kind)."""
    text, name = str(exc), type(exc).__name__
    if name == "QueueError":
        return "error", "queue_full", text
    if getattr(exc, "response", None) is not None:  # an HTTP status: clear when its body says what was wrong
        body, status = exc.response.text or "", exc.response.status_code
        return ("error", classify(body), f"{status} {body}") if classify(body) != "other" else ("failed", f"http_{status}", body)
    if name == "AppError":
        unclear = "has not enabled verbose error reporting" in text
        return ("failed", "server_error_without_message", text) if unclear else ("error", classify(text), text)
    if isinstance(exc, OSError) or "Connect" in name or "Read" in name:
        return "failed", f"connection ({name})", text
    return "failed", name, text


def user(load: Load, url: str, inputs: dict, args, seed: int) -> None:
    rng = random.Random(seed)
    pool = scenarios(inputs, url)
    weights = [s[1] for s in pool]
    client, visits = None, 0
    try:
        while time.perf_counter() < load.deadline:
            if client is None or visits >= args.visits:
                if client is not None:
                    client.close()
                client, visits = new_client(url, args.timeout), 0
            visits += 1
            _, _, steps = rng.choices(pool, weights)[0]
            for step in steps:
                if not load.take():
                    return
                record = run_step(client, step, args.timeout)
                load.add(record)
                if record["outcome"] != "result" or record["expected"] != "result":
                    break  # the rest of a visit builds on this step
    finally:
        if client is not None:
            client.close()


def run_users(url: str, inputs: dict, args, seconds: float, max_requests: int, seed: int) -> list[dict]:
    load = Load(max_requests, time.perf_counter() + seconds)
    threads = [threading.Thread(target=user, args=(load, url, inputs, args, seed + i), daemon=True)
               for i in range(args.users)]
    [t.start() for t in threads]
    [t.join(seconds + 3 * args.timeout) for t in threads]
    return load.records


def once_each(url: str, inputs: dict, args) -> list[dict]:
    client = new_client(url, args.timeout)
    records = [run_step(client, step, args.timeout) for _, _, steps in scenarios(inputs, url) for step in steps]
    client.close()
    return records


def burst(url: str, inputs: dict, n: int, timeout: float) -> list[dict]:
    """``n`` requests at once (each from its own session): more than the queue holds."""
    from gradio_client import handle_file

    clients = [new_client(url, timeout) for _ in range(n)]
    step = ("Sentence", "burst", "result", lambda c: c.submit(handle_file(str(inputs["scene"])), "the shape",
                                                              api_name="/sentence"))
    with ThreadPoolExecutor(n) as pool:
        records = list(pool.map(lambda c: run_step(c, step, timeout), clients))
    for c in clients:
        c.close()
    return records


# ----------------------------------------------------------------------------------------- report
def summarise(records: list[dict]) -> dict:
    count = lambda outcome: {k: sum(1 for r in records if r["outcome"] == outcome and r["kind"] == k)  # noqa: E731
                             for k in sorted({r["kind"] for r in records if r["outcome"] == outcome})}
    tabs = {}
    for tab in sorted({r["tab"] for r in records}):
        mine = [r for r in records if r["tab"] == tab]
        answered = [r["seconds"] for r in mine if r["outcome"] != "failed"]
        results = [r["seconds"] for r in mine if r["outcome"] == "result"]
        tabs[tab] = {"requests": len(mine), "p50_s": _pct(answered, 50), "p95_s": _pct(answered, 95),
                     "results": len(results), "result_p50_s": _pct(results, 50), "result_p95_s": _pct(results, 95)}
    unexpected = [f"{r['tab']}/{r['step']}: expected {r['expected']}, got {r['kind']}: {r['message'][:120]}"
                  for r in records if r["outcome"] != "failed" and r["kind"] != r["expected"]]
    return {"requests": len(records), "results": sum(r["outcome"] == "result" for r in records),
            "clear_errors": count("error"), "failed": count("failed"), "latency_by_tab": tabs,
            "unexpected_answers": unexpected[:20], "unexpected_count": len(unexpected)}


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def main(argv=None) -> dict:
    args = parse_args(argv)
    from unifusion_sam.demo import DemoConfig
    from unifusion_sam.demo.samples import write_samples

    config = DemoConfig.load(args.demo_config) if args.demo_config else DemoConfig()
    n_burst = config.max_queue + 8 if args.burst is None else args.burst
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = LOOPBACK
    with tempfile.TemporaryDirectory(prefix="demo-load-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        config.save(work / "demo_config.json")
        inputs = write_samples(work / "inputs", config, args.seed)
        port = free_port()
        url = f"http://{LOOPBACK}:{port}/"
        server = start_server(args, port, work, work / "demo_config.json")
        try:
            started_s = wait_ready(url, server)
            warm = once_each(url, inputs, args)
            if args.warmup > 0:
                warm += run_users(url, inputs, args, args.warmup, 10**9, args.seed + 1000)
            rss_warm = rss_mb(server.pid)
            start = time.perf_counter()
            records = run_users(url, inputs, args, args.duration, args.max_requests, args.seed)
            seconds = time.perf_counter() - start
            time.sleep(2.0)
            rss_run = rss_mb(server.pid)
            bursts = burst(url, inputs, n_burst, args.timeout) if n_burst > 0 else []
            rss_burst = rss_mb(server.pid)
            alive = server.poll() is None
        finally:
            status = stop_server(server)
        log = (work / "server.log").read_text(errors="replace")
    model = "outputs/default" if args.default_run else f"--checkpoint {args.checkpoint} --sam {args.sam}"
    report = {
        "settings": {**{k: v for k, v in vars(args).items() if k in ("users", "duration", "max_requests", "warmup",
                                                                      "timeout", "visits", "seed")},
                     "model": model, "burst": n_burst, "cpu": _cpu(), "cores": os.cpu_count(), "limits": config.to_dict(),
                     "queue": {"max_size": config.max_queue, "concurrency_limit": config.concurrency_limit}},
        "server_start_s": round(started_s, 1), "run_s": round(seconds, 1),
        "warmup": {"requests": len(warm), "unexpected": summarise(warm)["unexpected_answers"]},
        **summarise(records),
        "burst": summarise(bursts) | {"sent": n_burst},
        "memory_mb": {"after_warmup": rss_warm, "after_run": rss_run, "after_burst": rss_burst,
                      "ratio": round(rss_run / rss_warm, 3) if rss_warm and rss_run else None, "goal": 1.2},
        "server_alive_after_run": alive, "server_exit_status": status,
        "server_log": {"tracebacks": log.count("Traceback"), "of_which_refused_uploads": log.count("gradio.exceptions.Error:"),
                       "tail": log[-1500:]},
    }
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def format_report(r: dict) -> str:
    s, b, m = r["settings"], r["burst"], r["memory_mb"]
    return "\n".join([
        f"demo load test: {s['users']} users, {r['run_s']} s, {s['model']}, queue max {s['queue']['max_size']}, "
        f"concurrency {s['queue']['concurrency_limit']} ({s['cpu']}, {s['cores']} cores)",
        f"requests {r['requests']}: results {r['results']}, clear errors {sum(r['clear_errors'].values())} "
        f"{r['clear_errors']}, failed {sum(r['failed'].values())} {r['failed']}",
        *(f"  {tab:9s} {t['requests']:5d} requests  p50 {t['p50_s']} s  p95 {t['p95_s']} s  (results: {t['results']},"
          f" p50 {t['result_p50_s']} s, p95 {t['result_p95_s']} s)" for tab, t in r["latency_by_tab"].items()),
        f"burst of {b['sent']}: results {b['results']}, clear errors {b['clear_errors']}, failed {b['failed']}",
        f"memory (VmRSS): {m['after_warmup']} MB after warm-up, {m['after_run']} MB after the run (ratio {m['ratio']}, "
        f"goal <= {m['goal']}), {m['after_burst']} MB after the burst",
        f"server alive after the run: {r['server_alive_after_run']} (exit status {r['server_exit_status']}, "
        f"{r['server_log']['tracebacks']} tracebacks in its log, {r['server_log']['of_which_refused_uploads']} of them "
        f"refused uploads); unexpected answers: {r['unexpected_count']}",
        *(f"  {u}" for u in r["unexpected_answers"][:10])])


if __name__ == "__main__":
    main()
