"""Peak memory of streamed expert selection + pruning against the checkpoint's size.

Runs `emomoe select` under `/usr/bin/time -v` (Debian package `time`) once per method on a
checkpoint directory (make a multi-GB one with `benchmarks/make_synthetic_checkpoint.py`) and
reports max RSS / checkpoint bytes. The bar: below 35% of the checkpoint (plus activations).

    python benchmarks/make_synthetic_checkpoint.py /tmp/synth-emo
    python benchmarks/select_memory.py /tmp/synth-emo --calib ../shared/corpus/val.jsonl --json mem.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path


def run_once(model: Path, calib: list[str], method: str, keep: int, extra: list[str]) -> dict:
    """One `emomoe select` run under /usr/bin/time -v: max RSS (bytes) and wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pruned"
        cmd = ["/usr/bin/time", "-v", "emomoe", "select", "--model", str(model), "--calib", *calib,
               "--keep", str(keep), "--method", method, "--out", str(out), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        pruned = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) * 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = sum(float(x) * 60**i for i, x in enumerate(reversed(wall.split(":"))))
    return {"method": method, "max_rss": rss, "seconds": seconds, "pruned_bytes": pruned,
            "command": " ".join(cmd[2:]).replace(str(out), "OUT")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--calib", nargs="+", default=["../shared/corpus/val.jsonl"])
    p.add_argument("--methods", nargs="+", default=["global", "layerwise", "easy-ep"])
    p.add_argument("--keep", type=int, default=16)
    p.add_argument("--extra", default="--limit 16 --max-length 256", help="more `emomoe select` flags")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if not shutil.which("/usr/bin/time"):
        raise SystemExit("/usr/bin/time is missing: apt-get install time")
    size = sum(f.stat().st_size for f in args.model.glob("*.safetensors"))
    rows = [run_once(args.model, args.calib, m, args.keep, args.extra.split()) for m in args.methods]
    print(f"checkpoint {args.model}: {size / 1e9:.2f} GB; keep {args.keep}")
    print(f"{'method':<10} {'max RSS':>10} {'RSS / ckpt':>10} {'pruned':>10} {'wall':>8}")
    for r in rows:
        r["rss_over_checkpoint"] = r["max_rss"] / size
        print(f"{r['method']:<10} {r['max_rss'] / 1e9:>8.2f}GB {100 * r['rss_over_checkpoint']:>9.1f}% "
              f"{r['pruned_bytes'] / 1e9:>8.2f}GB {r['seconds']:>7.1f}s")
    if args.json:
        args.json.write_text(json.dumps({"checkpoint_bytes": size, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
