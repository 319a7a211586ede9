"""Commit an experiment's light results as they finish, so that a stopped experiment continues from git.

    python -m sweeps.commit -m "MESSAGE" PATH...      # what shell scripts call (docs/agent/remeasure.sh)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]      # the repository


def not_committable(path: Path, root: Path = ROOT) -> str | None:
    """Why files under `path` could not be committed (outside the repository at `root`, or git-ignored), or None."""
    path = Path(path).resolve()
    if not path.is_relative_to(root.resolve()):
        return f"{path} is not inside the repository {root}"
    done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=root, capture_output=True, text=True)
    if done.returncode == 0:
        return f"{path} is ignored by git (.gitignore)"
    return None if done.returncode == 1 else f"git check-ignore failed: {done.stderr.strip()}"


def commit(paths: list[Path], message: str, who: str, root: Path = ROOT, tries: int = 6,
           wait: float = 10.0) -> bool:
    """git add and commit `paths` (and nothing else that is staged) in the repository at `root`. While another
    process holds the index (index.lock: two experiments committing at once), retry up to `tries` times, `wait`
    seconds apart. A failure is reported on stderr as `who: ...`, not raised: the results stay on disk. True if
    the commit was made."""
    if why := next(filter(None, (not_committable(p, root) for p in paths)), None):
        print(f"{who}: not committed: {why}", file=sys.stderr)
        return False
    rel = [str(Path(p).resolve().relative_to(root.resolve())) for p in paths]
    for command in (["git", "add", "--", *rel], ["git", "commit", "-q", "-m", message, "--", *rel]):
        for attempt in range(tries):
            done = subprocess.run(command, cwd=root, capture_output=True, text=True)
            if done.returncode == 0 or "index.lock" not in done.stderr or attempt == tries - 1:
                break
            time.sleep(wait)
        if done.returncode:
            print(f"{who}: {' '.join(command[:2])} failed: {(done.stderr or done.stdout).strip()}", file=sys.stderr)
            return False
    return True


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.commit", description="git add and commit the given paths "
                                "(and nothing else that is staged), retrying while another process holds the index")
    p.add_argument("paths", nargs="+", type=Path, help="files or folders inside the repository")
    p.add_argument("-m", "--message", required=True, help="the commit message")
    args = p.parse_args(argv)
    return 0 if commit(args.paths, args.message, "sweeps.commit", root=root) else 1


if __name__ == "__main__":
    sys.exit(main())
