"""What a sweep does with each run directory: start it, resume it, skip it, or refuse to touch it."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from agent.config import AgentConfig
from agent.report import read_metrics

from .grid import RunSpec

NEW, RESUME, SKIP, CONFLICT = "new", "resume", "skip", "conflict"


@dataclass(frozen=True)
class Plan:
    spec: RunSpec
    run_dir: Path
    action: str           # NEW, RESUME, SKIP or CONFLICT
    reason: str = ""      # why a CONFLICT run is not touched


def is_finished(run_dir: Path) -> bool:
    """True when the run's metrics.jsonl has as many lines as the episodes in its config.json."""
    return len(read_metrics(run_dir)) >= AgentConfig.load(Path(run_dir) / "config.json").episodes


def config_differences(stored: AgentConfig, requested: AgentConfig) -> list[str]:
    """'name (stored X, requested Y)' for every setting that differs, but `episodes` and those that change nothing
    for either run (AgentConfig.unused_settings, e.g. refine_every for amortized runs)."""
    old, new = asdict(stored), asdict(requested)
    skip = {"episodes"} | (stored.unused_settings() & requested.unused_settings())
    return [f"{k} (stored {old[k]!r}, requested {new[k]!r})" for k in old if k not in skip and old[k] != new[k]]


def plan_run(spec: RunSpec, out: Path) -> Plan:
    """Decide what to do with the run directory out/<name>: a directory without config.json is started
    fresh; one whose config matches (all settings but episodes) is skipped when it is finished and not
    asked for more episodes, otherwise resumed; a different or unreadable config is never touched."""
    run_dir = Path(out) / spec.name
    if not (run_dir / "config.json").exists():
        return Plan(spec, run_dir, NEW)
    try:
        stored = AgentConfig.load(run_dir / "config.json")
        finished = is_finished(run_dir)
    except ValueError as e:     # an unreadable config.json or metrics.jsonl
        return Plan(spec, run_dir, CONFLICT, f"cannot read the existing run: {e}")
    differences = config_differences(stored, spec.config)
    if differences:
        return Plan(spec, run_dir, CONFLICT, "the existing run has other settings: " + "; ".join(differences)
                    + "; not touching it (use another --out, or the same settings)")
    if finished and spec.config.episodes <= stored.episodes:
        return Plan(spec, run_dir, SKIP)
    return Plan(spec, run_dir, RESUME)
