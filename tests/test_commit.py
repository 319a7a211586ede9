import subprocess
import sys
import threading
from pathlib import Path

from sweeps.commit import commit, main, not_committable

REPO = Path(__file__).resolve().parents[1]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def new_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "test")
    (root / ".gitignore").write_text("/ignored/\n")
    git(root, "add", ".gitignore")
    git(root, "commit", "-q", "-m", "start")
    return root


def test_commits_only_the_given_paths(tmp_path):
    root = new_repo(tmp_path)
    (root / "results").mkdir()
    (root / "results" / "a.json").write_text("{}")
    (root / "other.txt").write_text("staged by someone else")
    git(root, "add", "other.txt")
    assert commit([root / "results"], "results a", "test", root=root)
    assert git(root, "log", "-1", "--format=%s").strip() == "results a"
    assert git(root, "show", "--name-only", "--format=", "HEAD").split() == ["results/a.json"]
    assert git(root, "diff", "--cached", "--name-only").split() == ["other.txt"]     # still staged, not committed


def test_waits_for_another_commit_holding_the_index(tmp_path):
    root = new_repo(tmp_path)
    (root / "b.json").write_text("{}")
    lock = root / ".git" / "index.lock"
    lock.write_text("")
    threading.Timer(0.5, lock.unlink).start()          # the other process finishes its commit
    assert commit([root / "b.json"], "b", "test", root=root, tries=20, wait=0.1)
    assert git(root, "log", "-1", "--format=%s").strip() == "b"


def test_a_failure_is_reported_not_raised_and_the_files_stay(tmp_path, capsys):
    root = new_repo(tmp_path)
    (root / "c.json").write_text("{}")
    (root / ".git" / "index.lock").write_text("")     # held for good
    assert not commit([root / "c.json"], "c", "test", root=root, tries=2, wait=0.01)
    assert "test: git add failed" in capsys.readouterr().err and (root / "c.json").exists()
    (root / "ignored").mkdir()
    assert not commit([root / "ignored"], "d", "test", root=root)
    assert "is ignored by git" in capsys.readouterr().err
    assert not commit([tmp_path], "e", "test", root=root)
    assert "not inside the repository" in capsys.readouterr().err


def test_not_committable_names_the_reason(tmp_path):
    root = new_repo(tmp_path)
    assert not_committable(root / "docs" / "x", root) is None
    assert "ignored by git" in not_committable(root / "ignored" / "x", root)
    assert "not inside the repository" in not_committable(tmp_path / "elsewhere", root)


def test_toy_experiment_commit_needs_a_tracked_out():
    out = subprocess.run([sys.executable, "-m", "analysis.toy_experiment", "--commit", "--out", "results/toy_x"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and "--commit" in out.stderr and "ignored by git" in out.stderr


def test_command_line_commits_the_paths_and_fails_on_ignored_ones(tmp_path, capsys):
    root = new_repo(tmp_path)
    for folder in ("results", "ignored"):
        (root / folder).mkdir()
        (root / folder / "a.json").write_text("{}")
    assert main([str(root / "results"), "-m", "results by the command"], root=root) == 0
    assert git(root, "log", "-1", "--format=%s").strip() == "results by the command"
    assert main([str(root / "ignored"), "-m", "nothing"], root=root) == 1
    assert "ignored by git" in capsys.readouterr().err
