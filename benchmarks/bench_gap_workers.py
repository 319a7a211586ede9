"""Wall-clock of a trained run's gap decomposition with 1 and with 2 worker processes (`world_model_gaps --workers`),
the calls alternated (1, 2, then 2, 1, ...) so that both see the same machine, and a check that both give the same
numbers. Needs two free cores to measure what a second worker buys.

    python benchmarks/bench_gap_workers.py RUN --out docs/bench_gaps      # reduced budgets (OPTIONS), held-out split
    python benchmarks/bench_gap_workers.py RUN --options="--quick"        # other world_model_gaps options

Writes OUT/workers.json (every call's seconds and core-seconds, the speedup: mean wall-clock with 1 worker over
that with 2) and prints the same as a table.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

# every budget about a quarter of its default or less (a few minutes per call on this project's CPU, against 42-83
# min at the defaults), the same pieces in about the same proportions: fresh encoders, q* of four families, log p(x)
# with AIS, BDMC on 4 sequences, the ELBOs
OPTIONS = "--splits heldout --encoder-steps 100 --q-star-max-steps 100 --ais-steps 100 --eval-samples 200"


def decompose(run: Path, out: Path, workers: int, options: list[str]) -> dict:
    """One world_model_gaps call in its own process; its gaps.json."""
    subprocess.run([sys.executable, "-m", "analysis.world_model_gaps", str(run), "--out", str(out), "--workers",
                    str(workers), *options], check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "gaps.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="an agent run directory (run_agent.py --run-dir)")
    ap.add_argument("--out", type=Path, default=None, help="where workers.json goes (default: print only)")
    ap.add_argument("--repeats", type=int, default=1, help="pairs of calls (1 and 2 workers)")
    ap.add_argument("--options", default=OPTIONS, help="world_model_gaps options of every call")
    args = ap.parse_args(argv)
    options = shlex.split(args.options)
    calls = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for workers in (1, 2) if i % 2 == 0 else (2, 1):
                r = decompose(args.run, Path(tmp) / f"{i}-{workers}", workers, options)
                bdmc = r.get("bdmc") or {}
                calls.append({"workers": workers, "seconds": r["seconds"], "core_seconds": r["core_seconds"],
                              "numbers": {**{s: r[s]["values"] for s in r["splits"]},
                                          **{f"bdmc {k}": bdmc[k] for k in ("lower", "upper") if k in bdmc}}})
    same = all(c["numbers"] == calls[0]["numbers"] for c in calls)      # every ELBO, log p(x) and BDMC bound
    mean = {w: sum(c["seconds"] for c in calls if c["workers"] == w) / args.repeats for w in (1, 2)}
    result = {"run": str(args.run), "options": options, "repeats": args.repeats, "same_numbers": same,
              "speedup": mean[1] / mean[2],
              "calls": [{k: v for k, v in c.items() if k != "numbers"} for c in calls]}
    print("| workers | seconds | core-seconds |\n|---|---|---|")
    for c in result["calls"]:
        print(f"| {c['workers']} | {c['seconds']:.0f} | {c['core_seconds']:.0f} |")
    print(f"speedup of 2 workers: {result['speedup']:.2f}x; the same numbers: {same}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "workers.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
