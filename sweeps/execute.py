"""One run of a sweep: its run_agent.py command line, and running it with its output appended to log.txt."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from agent.config import AgentConfig, flag

from .commit import ROOT
from .grid import OWN_OPTIONS


def agent_command(config: AgentConfig, run_dir: Path, resume: bool, threads: int, wandb_group: str) -> list[str]:
    """The run_agent.py command for `config` in `run_dir`: every setting that is not AgentConfig's default
    (env, inference, seed and wandb always), and --resume to continue an existing run."""
    defaults = asdict(AgentConfig())
    flags = []
    for key, value in asdict(config).items():
        if key in OWN_OPTIONS or value != defaults[key]:
            flags += [flag(key), str(int(value) if isinstance(value, bool) else value)]
    return ([sys.executable, str(ROOT / "run_agent.py")] + flags + (["--resume"] if resume else [])
            + ["--run-dir", str(run_dir), "--no-progress", "--threads", str(threads), "--wandb-group", wandb_group])


def run_logged(command: list[str], run_dir: str, threads: int) -> tuple[int, float]:
    """Run `command` from the repository root with `threads` OpenMP threads, appending its stdout and
    stderr to run_dir/log.txt; return its exit code and wall-clock seconds."""
    start = time.monotonic()
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "log.txt"), "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        code = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)}).returncode
    return code, time.monotonic() - start


def log_tail(run_dir: Path, lines: int = 20) -> str:
    """The last `lines` lines of run_dir/log.txt ('' if there is none)."""
    path = Path(run_dir) / "log.txt"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
