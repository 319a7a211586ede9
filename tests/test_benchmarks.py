"""The benchmark scripts run end to end (tiny sizes; what they measure is not asserted here)."""
import json
import math

from benchmarks import bench_targets


def test_bench_targets_quick_reports_every_target(tmp_path, capsys):
    out = tmp_path / "targets.json"
    assert bench_targets.main(["--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    names = [row["name"] for row in report["rows"]]
    for number in ("1 ", "2 ", "3 ", "4 "):
        assert any(name.startswith(number) for name in names), (number, names)
    assert all(math.isfinite(row["value"]) and row["value"] > 0 for row in report["rows"])
    assert report["train_flops"] > 0 and report["per_sequence"]["steps"] > 0
    printed = capsys.readouterr().out
    assert "QUICK MODE" in printed and "target" in printed
