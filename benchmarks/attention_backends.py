"""Peak memory and time of the UniFusion attention backends: ``sdpa`` relative to ``math``.

Setting (issue #2): a 64x64 query map against 2 x 64x64 reference tokens, C = 256, for 8 x 32 and
8 x 256 heads. For each head setting it prints the ratios ``sdpa / math`` twice:

- ``attention``: the backend call alone (``cross_attention(q, k, v)`` on projected inputs), which is
  what the backends differ in;
- ``block``: the whole UniFusion forward (norms, q/k/v/out projections, modulation), whose
  projections cost the same with either backend (with 8 x 256 heads they hold ~160 MiB by themselves).

Target: memory ratio <= 0.05 and time ratio <= 0.5.

    python benchmarks/attention_backends.py [--size 64] [--repeats 3]

Every measurement runs in a fresh subprocess. Peak memory = the process's resident high-water mark
(``VmHWM``) after the measured call minus before it (CPU), or ``torch.cuda.max_memory_allocated``
above the memory held before the call (``--device cuda``). Time = best of ``--repeats`` calls.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
from unifusion_sam.fusion import ReferenceTokens, UniFusion, UniFusionConfig, cross_attention
what, backend, heads, head_dim, size, repeats, device = sys.argv[1:8]
heads, head_dim, size, repeats = int(heads), int(head_dim), int(size), int(repeats)
dev = torch.device(device)

def hwm():  # resident high-water mark of this process in bytes (reset at exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

torch.manual_seed(0)
block = UniFusion(UniFusionConfig(dim=256, num_heads=heads, head_dim=head_dim, backend=backend)).to(dev).eval()
n = 2 * size * size
feature = torch.randn(1, 256, size, size, device=dev)
ref = ReferenceTokens(torch.randn(1, n, 256, device=dev), torch.randn(1, n, 256, device=dev))
with torch.no_grad():
    q = torch.randn(1, heads, size * size, head_dim, device=dev)
    k = torch.randn(1, heads, n, head_dim, device=dev)
    v = torch.randn(1, heads, n, head_dim, device=dev)
    if what == "attention":
        call = lambda: cross_attention(q, k, v, backend=backend)
        warm = lambda: cross_attention(q[:, :, :4], k[:, :, :8], v[:, :, :8], backend=backend)
    else:
        call = lambda: block(feature, mask=ref)
        warm = lambda: block(feature[:, :, :2, :2], mask=ReferenceTokens(ref.keys[:, :8], ref.values[:, :8]))
    warm()
    if dev.type == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    else:
        base = hwm()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = call()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        del out
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda" else hwm()) - base
print(json.dumps({"time_s": min(times), "peak_bytes": peak}))
"""


def measure(what: str, backend: str, heads: int, head_dim: int, size: int, repeats: int, device: str) -> dict:
    args = [what, backend, str(heads), str(head_dim), str(size), str(repeats), device]
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"measurement {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="query map side; references are 2 x size x size tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write all numbers to this file")
    args = parser.parse_args()

    results: dict = {}
    for heads, head_dim in ((8, 32), (8, 256)):
        for what in ("attention", "block"):
            row = {b: measure(what, b, heads, head_dim, args.size, args.repeats, args.device) for b in ("math", "sdpa")}
            mem = row["sdpa"]["peak_bytes"] / max(row["math"]["peak_bytes"], 1)
            tim = row["sdpa"]["time_s"] / row["math"]["time_s"]
            results[f"{heads}x{head_dim}/{what}"] = {**row, "memory_ratio": mem, "time_ratio": tim}
            print(
                f"{heads} x {head_dim:<3} {what:<9}: math {row['math']['time_s']:.3f}s "
                f"{row['math']['peak_bytes'] / 2**20:6.0f} MiB | sdpa {row['sdpa']['time_s']:.3f}s "
                f"{row['sdpa']['peak_bytes'] / 2**20:5.0f} MiB | sdpa/math memory {mem:.4f} (target <= 0.05), "
                f"time {tim:.3f} (target <= 0.5)",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
