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


def test_bench_throughput_compares_profiles_and_counts_planner_work(tmp_path, capsys):
    """Tiny agents under v1 and the defaults: per-episode records, a 100-episode estimate and the sequences each
    planner evaluated per decision (CEM cpu preset: 300 x 5 = 1500; iCEM cpu preset: 450 on the first decision of
    an episode, 454 warm-started)."""
    from benchmarks import bench_throughput
    tiny = "seed_episodes=1,train_steps=1,batch_size=2,seq_len=4,deter=8,stoch=4,hidden=8,horizon=2," \
           "action_repeat=100,eval_episodes=1"
    out = tmp_path / "throughput.json"
    assert bench_throughput.main(["--posteriors", "amortized", "--profiles", f"v1:{tiny}", f"default:{tiny}",
                                  "--episodes", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    old, new = report["summaries"][f"amortized/v1:{tiny}"], report["summaries"][f"amortized/default:{tiny}"]
    assert old["sequences_per_decision"] == 1500 and 450 < new["sequences_per_decision"] < 454
    assert old["gflop_per_decision"] > 3 * new["gflop_per_decision"]
    assert [r["episode"] for r in report["records"][f"amortized/v1:{tiny}"]] == [1, 2, 3]
    for s in (old, new):
        assert s["run_episodes"] == 100 and s["episodes_per_core_hour"] > 0 and s["settings"]["train_steps"] == 1
    assert "episodes per core-hour" in capsys.readouterr().out


def test_q_star_halvings_compares_settings_against_the_exact_log_px(capsys):
    import re

    from benchmarks import q_star_halvings
    assert q_star_halvings.main(["--task", "synthetic9", "--sequences", "3", "--halvings", "0", "2",
                                 "--encoder-steps", "5"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"halvings 0: \d+ steps, halved at \[\], stopped by patience", printed), printed
    assert re.search(r"halvings 2: \d+ steps, halved at \[\d+, \d+\]", printed), printed
    gaps = [float(g) for g in re.findall(r"log p\(x\) - L\[q\*\] (-?[\d.]+)", printed)]
    assert len(gaps) == 2 and all(g > -0.05 for g in gaps)      # an ELBO, below the exact log p(x)
    assert "halvings 2 minus 0:" in printed


def test_bench_gap_workers_times_both_and_finds_the_same_numbers(tmp_path, capsys):
    from benchmarks import bench_gap_workers
    from run_agent import main as agent_main
    from tests.test_world_model_analysis import SMALL, TINY
    run = tmp_path / "run"
    assert agent_main(TINY + ["--inference", "amortized", "--run-dir", str(run)]) == 0
    assert bench_gap_workers.main([str(run), "--options", " ".join(SMALL), "--out", str(tmp_path / "out")]) == 0
    r = json.loads((tmp_path / "out" / "workers.json").read_text())
    assert r["same_numbers"] and [c["workers"] for c in r["calls"]] == [1, 2] and r["speedup"] > 0
    assert "speedup of 2 workers" in capsys.readouterr().out


def test_bench_ais_times_both_loops_on_the_same_chains(tmp_path):
    from benchmarks import bench_ais
    out = tmp_path / "ais.json"
    report = bench_ais.main(["--quick", "--json", str(out)])
    assert json.loads(out.read_text())["plain_over_given"] == report["plain_over_given"] > 0
    assert report["max_abs_difference_log_px"] < 1e-3     # the same AIS, up to float32 rounding
