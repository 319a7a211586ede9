"""A sweep's outcome: one record per run, the table printed at the end and sweep_summary.json."""
from __future__ import annotations

import json
from pathlib import Path

from agent.checkpoint import write_atomic
from agent.report import read_metrics

FINISHED, SKIPPED, FAILED, RESUMED = "finished", "skipped", "failed", "resumed"
NOT_STARTED = "not started"     # left for a later call (sweeps.study --hours)


def final_eval_return(run_dir: Path) -> float | None:
    """The last evaluation return in the run's metrics.jsonl, or None if it has none (or cannot be read)."""
    try:
        rows = read_metrics(run_dir)
    except ValueError:
        return None
    returns = [r["eval_return"] for r in rows if "eval_return" in r]
    return returns[-1] if returns else None


def record(name: str, run_dir: Path, status: str, seconds: float | None = None, exit_code: int | None = None,
           message: str = "", log: str = "") -> dict:
    """The summary entry of one run."""
    return {"name": name, "run_dir": str(run_dir), "status": status, "seconds": seconds, "exit_code": exit_code,
            "final_eval_return": final_eval_return(run_dir), "message": message, "log_tail": log}


def table(records: list[dict]) -> str:
    """The records as an aligned text table: name, status, wall-clock seconds, final evaluation return."""
    rows = [("run", "status", "seconds", "final eval return")] + [
        (r["name"], r["status"], "-" if r["seconds"] is None else f"{r['seconds']:.1f}",
         "-" if r["final_eval_return"] is None else f"{r['final_eval_return']:.1f}") for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     .rstrip() for row in rows)


def write_summary(path: Path, sweep: str, records: list[dict]) -> None:
    """Write {sweep, counts per status, runs} to `path` atomically."""
    counts = {s: sum(r["status"] == s for r in records) for s in (FINISHED, RESUMED, SKIPPED, FAILED, NOT_STARTED)}
    data = {"sweep": sweep, "counts": counts, "runs": records}
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=2).encode()))
