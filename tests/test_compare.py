import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.config import AgentConfig
from analysis.compare import main
from analysis.compare_numbers import by_horizon
from analysis.run_results import GAP_COLUMNS, Run, encoder_excess, load_runs, task_variant

REPO = Path(__file__).resolve().parents[1]

# final evaluation (episode 6) and the earlier one (episode 3) per seed 0, 1, 2
EVALS = {"amortized": {3: [10, 20, 30], 6: [100, 200, 600]},
         "semi_amortized": {3: [0, 0, 30], 6: [300, 330, 360]}}
GAPS = {0: {"amortization": 0.1, "inference": 0.5, "log_px": -2.0},
        1: {"amortization": 0.3, "inference": 0.7, "log_px": -3.0}}
UNCERTAINTY = {"summary": {"obs": {"nll": 1.5, "crps": 0.2, "coverage50": 0.45, "coverage90": 0.875}},
               "noise": {"model": {"emission_var": 0.04}}}


def write_run(root: Path, inference: str, seed: int, evals: dict, analysis: dict | None = None, **settings) -> Path:
    """A run dir as the agent leaves it: 6 episodes, train return (seed + 1) * episode, 6 s of training and 3 s of
    collecting per episode, 3 s per evaluation, 1000 env steps per episode."""
    run_dir = root / f"{inference}-{'-'.join(f'{k}{v}' for k, v in settings.items())}-s{seed}"
    run_dir.mkdir()
    AgentConfig(inference=inference, seed=seed, **{"episodes": 6, **settings}).save(run_dir / "config.json")
    rows = []
    for episode in range(1, 7):
        row = {"episode": episode, "train_seconds": 6.0, "train_return": (seed + 1) * episode, "collect_seconds": 3.0,
               "plan_seconds": 2.5, "env_steps": 1000 * episode}
        if episode in evals:
            row.update(eval_return=evals[episode][seed], eval_seconds=3.0)
        rows.append(row)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, data in (analysis or {}).items():
        (run_dir / "analysis").mkdir(exist_ok=True)
        (run_dir / "analysis" / f"{name}.json").write_text(json.dumps(data))
    return run_dir


def gaps_json(seed: int) -> dict:
    g = GAPS[seed]
    stat = lambda x: {"mean": 50 * x, "sem": 0.01, "mean_per_step": x, "sem_per_step": 0.001, "n": 20}
    heldout = {"gaps": {"amortization": stat(g["amortization"]), "inference": stat(g["inference"])},
               "log_px": stat(g["log_px"]), "estimator": "smc-100"}
    return {"heldout": heldout, "train": heldout}


def assert_over_seeds(stat: dict, mean: float, sem: float, n: int) -> None:
    """A per-group summary: mean, s.e. and the 95% t interval mean -+ t_{0.975, n-1} s.e. (t from a table)."""
    t = {2: 12.706205, 3: 4.302653}[n]
    assert (stat["mean"], stat["sem"], stat["n"]) == (pytest.approx(mean), pytest.approx(sem), n)
    assert stat["ci"] == pytest.approx([mean - t * sem, mean + t * sem])


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    for inference, evals in EVALS.items():
        for seed in range(3):
            analysis = {}
            if inference == "amortized" and seed in GAPS:
                analysis["gaps"] = gaps_json(seed)
            if inference == "amortized" and seed == 0:
                analysis["uncertainty"] = UNCERTAINTY
            write_run(root, inference, seed, evals, analysis)
    return root


def by_inference(report: dict) -> dict:
    return {g["inference"]: g for g in report["groups"]}


def test_report_numbers_tables_and_plots(runs, tmp_path):
    out = tmp_path / "out"
    assert main([str(runs / "*"), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    groups = by_inference(report)
    assert [(g["task_variant"], g["n_seeds"]) for g in report["groups"]] == [("cartpole", 3), ("cartpole", 3)]

    final = groups["amortized"]["final_return"]
    assert (final["n"], final["mean"], final["median"], final["min"], final["max"]) == (3, 300, 200, 100, 600)
    assert final["iqm"] == pytest.approx(300)   # 3 seeds: floor(3/4) = 0 trimmed, the IQM is the mean
    low, high = final["iqm_ci"]
    assert 100 <= low < 300 < high <= 600
    assert groups["semi_amortized"]["final_return"]["mean"] == pytest.approx(330)

    curves = groups["amortized"]["curves"]
    assert curves["eval_return"]["episode"] == [3, 6]
    assert curves["eval_return"]["env_steps"] == [3000, 6000]
    assert curves["eval_return"]["mean"] == pytest.approx([20, 300])
    # mean over seeds of (seed + 1) * episode is 2 * episode; trailing mean over 5 episodes
    assert curves["train_return"]["mean"] == pytest.approx(2 * np.array([1, 1.5, 2, 2.5, 3, 4]))

    gaps = groups["amortized"]["gaps"]
    assert_over_seeds(gaps["amortization"], 0.2, 0.1, 2)
    assert gaps["inference"]["mean"] == pytest.approx(0.6)
    assert gaps["log_px"]["mean"] == pytest.approx(-2.5)
    assert gaps["conditioning"]["n"] == 0
    assert groups["semi_amortized"]["gaps"]["amortization"]["n"] == 0
    assert groups["amortized"]["uncertainty"]["obs"]["coverage90"] == {"mean": 0.875, "sem": None, "ci": None, "n": 1}
    assert groups["amortized"]["uncertainty"]["state"]["nll"]["n"] == 0
    assert not list(out.glob("calibration_*.png"))     # no scores per horizon in these runs: no figure
    noise = groups["amortized"]["noise"]   # learned std sqrt(0.04), nothing injected
    assert noise["learned_obs_std"]["mean"] == pytest.approx(0.2) and noise["injected_obs_std"]["mean"] == 0
    assert noise["learned_minus_injected"]["mean"] == pytest.approx(0.2)
    assert groups["semi_amortized"]["noise"]["learned_obs_std"]["n"] == 0

    clock = groups["semi_amortized"]["wall_clock"]
    assert clock["minutes"]["mean"] == pytest.approx((6 * 9 + 2 * 3) / 60)
    assert clock["env_steps"]["mean"] == 6000

    md = (out / "report.md").read_text()
    assert report["command"] in md and "--out" in report["command"]
    assert "0.200 [-1.071, 1.471] (2)" in md and "## Calibration" in md and "smc-100" in md
    assert "| cartpole | amortized | 0.0000 (1) | 0.2000 (1) | 0.2000 (1) |" in md
    # the constructed gaps.json record no fresh-encoder schedule: each run with one is named as left out
    assert report["unsettled_fresh_fits"] == ["amortized--s0", "amortized--s1"]
    assert "(left out: amortized--s0, amortized--s1)" in md
    pngs = re.findall(r"\]\(([^)]+\.png)\)", md)
    assert set(pngs) == {"final_iqm.png", "curves_cartpole.png"}
    for png in pngs:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.suffix not in (".png", ".md", ".json")]  # no temp files left

    # semi_amortized's finals 300, 330, 360 each beat amortized's 100 and 200 and lose to 600: P = 6 / 9
    (improvement,) = report["improvement"]
    assert (improvement["inference"], improvement["baseline"], improvement["n"]) == ("semi_amortized", "amortized", [3, 3])
    assert improvement["probability"] == pytest.approx(2 / 3)
    low, high = improvement["ci"]
    assert 0 <= low < 2 / 3 < high <= 1
    assert "P(X > amortized)" in md and "0.67 [" in md
    assert all(v["spearman"] is None for v in report["correlations"]["amortization_gap"]["by_variant"])  # too few

    # the last 2 evaluations: amortized seeds (10 + 100) / 2, (20 + 200) / 2, (30 + 600) / 2
    assert main([str(runs / "*"), "--out", str(out), "--final-episodes", "2"]) == 0
    final = by_inference(json.loads((out / "report.json").read_text()))["amortized"]["final_return"]
    assert (final["mean"], final["median"]) == pytest.approx((160, 110))


def test_missing_analysis_variants_and_skipped_dirs(tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    evals = {6: [100, 200, 600]}
    dirs = [write_run(root, "amortized", s, evals) for s in (0, 1)]
    dirs += [write_run(root, "amortized", s, evals, missing_every=2) for s in (1, 2)]
    dirs += [write_run(root, "iterative_amortized", 0, evals, **more) for more in ({}, {"missing_every": 2})]
    (root / "empty").mkdir()
    no_eval = write_run(root, "semi_amortized", 0, {})
    out = tmp_path / "out"
    assert main([*map(str, dirs), str(root / "empty"), str(no_eval), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipping" in err and "no metrics.jsonl" in err and "no eval_return values" in err

    report = json.loads((out / "report.json").read_text())
    assert [(g["task_variant"], g["inference"], g["n_seeds"]) for g in report["groups"]] == [
        ("cartpole", "amortized", 2), ("cartpole", "iterative_amortized", 1),
        ("cartpole missing_every=2", "amortized", 2), ("cartpole missing_every=2", "iterative_amortized", 1)]
    assert len(report["skipped"]) == 2
    # pooled over both variants: 100, 200 | 200, 600 -> one trimmed from each end: (200 + 200) / 2
    pooled, one_seed_each = report["across_variants"]
    assert (pooled["inference"], pooled["n"], pooled["iqm"]) == ("amortized", 4, 200)
    low, high = pooled["iqm_ci"]
    assert low < high
    # one seed in each variant: each would be resampled as a constant, so no interval rather than a point
    assert (one_seed_each["inference"], one_seed_each["n"], one_seed_each["iqm_ci"]) == ("iterative_amortized", 2, None)
    md = (out / "report.md").read_text()
    assert "(a variant with one seed: no CI)" in md
    assert "## Gaps" not in md and "## Calibration" not in md and "## Wall-clock" in md
    assert (out / "curves_cartpole_missing_every_2.png").exists()


def test_task_variant_names_non_default_settings():
    assert task_variant(AgentConfig()) == "cartpole"
    assert task_variant(AgentConfig(missing_prob=0.25, action_noise=0.1)) == "cartpole missing_prob=0.25 action_noise=0.1"


def test_no_valid_run_dirs_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "analysis.compare", str(tmp_path / "empty"),
                             str(tmp_path / "absent"), "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2
    assert "no valid run directory" in result.stderr
    assert not out.exists()
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "empty"), "--out", str(out), "--final-episodes", "0"])
    assert e.value.code == 2


def test_runs_differing_in_a_setting_are_split_and_curves_have_wall_clock(tmp_path):
    """Amortized runs with two planner presets form two groups named by the preset, not one group of four seeds;
    curves carry the cumulative wall-clock minutes of each episode (here 9 s per episode + 3 s per evaluation)."""
    root = tmp_path / "runs"
    root.mkdir()
    evals = {3: [10, 20], 6: [100, 200]}
    for preset in ("cpu", "planet"):
        for seed in range(2):
            write_run(root, "amortized", seed, evals, planner_preset=preset)
    out = tmp_path / "report"
    assert main([str(p) for p in sorted(root.iterdir())] + ["--out", str(out), "--n-boot", "50"]) == 0
    report = json.loads((out / "report.json").read_text())
    groups = by_inference(report)
    assert set(groups) == {"amortized planner_preset=cpu", "amortized planner_preset=planet"}
    assert all(g["n_seeds"] == 2 for g in groups.values())
    assert groups["amortized planner_preset=cpu"]["curves"]["eval_return"]["minutes"] == pytest.approx([0.5, 1.0])
    assert not report["warnings"]


def test_until_episode_compares_runs_at_equal_data(runs, tmp_path):
    """Cut at episode 4, each run's final evaluation is its episode-3 one (EVALS[...][3]); a longer run of the same
    settings stays in its group."""
    write_run(runs, "amortized", 3, {3: [0, 0, 0, 50], 6: [0, 0, 0, 900]}, episodes=10)
    out = tmp_path / "report"
    assert main([str(runs / "*"), "--out", str(out), "--n-boot", "50", "--until-episode", "4"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["until_episode"] == 4
    groups = by_inference(report)
    assert set(groups) == {"amortized", "semi_amortized"} and groups["amortized"]["n_seeds"] == 4
    assert groups["amortized"]["final_return"]["mean"] == pytest.approx(np.mean(EVALS["amortized"][3] + [50]))
    assert groups["semi_amortized"]["final_return"]["mean"] == pytest.approx(np.mean(EVALS["semi_amortized"][3]))
    assert "cut at episode 4" in (out / "report.md").read_text()


def test_calibration_by_horizon_over_seeds_and_its_figure(tmp_path):
    """Two runs' open-loop scores per horizon (horizons 3 and 2; the second without a scored observation at k = 1):
    over seeds at the horizons both have, a mean and t interval where 2 runs have a value; one figure per variant."""
    root = tmp_path / "runs"
    root.mkdir()
    scores = ({"nll": [1.0, 2.0, 3.0], "crps": [0.1, 0.2, 0.3], "coverage50": [0.5, 0.4, 0.3],
               "coverage90": [0.9, 0.8, 0.7]},
              {"nll": [None, 4.0], "crps": [None, 0.4], "coverage50": [None, 0.6], "coverage90": [None, 1.0]})
    for seed, obs in enumerate(scores):
        write_run(root, "amortized", seed, EVALS["amortized"], {"uncertainty": {**UNCERTAINTY,
                                                                               "per_horizon": {"obs": obs}}})
    write_run(root, "semi_amortized", 0, EVALS["semi_amortized"])        # no calibration analysis
    runs, _ = load_runs([str(root / "amortized*")], "eval_return")
    h = by_horizon([r.analysis["uncertainty"] for r in runs], "obs")
    assert h["nll"]["mean"] == [1.0, 3.0] and h["nll"]["n"] == [1, 2]
    assert h["nll"]["ci"][0] is None and h["nll"]["ci"][1] == pytest.approx([3 - 12.706205, 3 + 12.706205])
    assert h["coverage90"]["mean"] == pytest.approx([0.9, 0.9])
    assert by_horizon([r.analysis["uncertainty"] for r in runs], "state") is None
    out = tmp_path / "out"
    assert main([str(root / "*"), "--out", str(out), "--n-boot", "50"]) == 0
    assert "![calibration by horizon, cartpole](calibration_cartpole.png)" in (out / "report.md").read_text()
    assert (out / "calibration_cartpole.png").read_bytes()[:4] == b"\x89PNG"


def test_final_return_against_gaps_and_calibration_across_runs(tmp_path):
    """Five runs whose amortization gap falls and whose coverage error rises as the final return grows: rank
    correlations -1 and +1, a scatter plot for each, and no improvement table without the baseline's group."""
    root = tmp_path / "runs"
    root.mkdir()
    finals = [100, 200, 300, 400, 500]
    for seed, final in enumerate(finals):
        gap = {"heldout": {"gaps": {"amortization": {"mean_per_step": 1.0 / final}}}}
        coverage = 0.9 - final / 10_000       # coverage error (|0.45 - 0.5| + final / 10000) / 2
        calibration = {"summary": {"obs": {"coverage50": 0.45, "coverage90": coverage}}}
        write_run(root, "semi_amortized", seed, {6: {seed: final}}, {"gaps": gap, "uncertainty": calibration})
    out = tmp_path / "out"
    assert main([str(root / "*"), "--out", str(out), "--baseline", "per_sequence"]) == 0
    report = json.loads((out / "report.json").read_text())
    gap, calib = report["correlations"]["amortization_gap"], report["correlations"]["coverage_error"]
    (g,), (c,) = gap["by_variant"], calib["by_variant"]
    assert (len(gap["points"]), g["runs"], g["spearman"], c["spearman"]) == (5, 5, pytest.approx(-1), pytest.approx(1))
    assert calib["points"][0]["x"] == pytest.approx((0.05 + 0.01) / 2)
    assert g["ci"] == pytest.approx([-1, -1])                   # every resample with two distinct runs ranks alike
    assert report["improvement"] == []
    md = (out / "report.md").read_text()
    assert "## Across runs" in md and "Probability of improvement" not in md
    assert "| observation coverage error: (\\|c50 - 0.5\\| + \\|c90 - 0.9\\|) / 2 | cartpole | 5 |" in md  # pipes escaped
    for name in ("amortization_gap", "coverage_error"):
        assert f"(scatter_{name}.png)" in md and (out / f"scatter_{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_correlations_are_per_task_variant_never_pooled(tmp_path):
    """Within each variant the gap rises with the return (+1), while missing observations lower every return and raise
    every gap: pooled, the runs would rank -0.54 and read as 'larger gaps go with lower returns'."""
    root = tmp_path / "runs"
    root.mkdir()
    for settings, base_return, base_gap in (({}, 800, 1.0), ({"missing_prob": 0.5}, 500, 2.0)):
        for seed in range(3):
            gap = {"heldout": {"gaps": {"amortization": {"mean_per_step": base_gap + 0.1 * seed}}}}
            write_run(root, "amortized", seed, {6: {seed: base_return + 50 * seed}}, {"gaps": gap}, **settings)
    out = tmp_path / "out"
    assert main([str(root / "*"), "--out", str(out), "--n-boot", "50"]) == 0
    by_variant = json.loads((out / "report.json").read_text())["correlations"]["amortization_gap"]["by_variant"]
    assert [(v["runs"], v["spearman"]) for v in by_variant] == [(3, pytest.approx(1)), (3, pytest.approx(1))]


def test_learned_noise_is_set_against_the_injected_noise(tmp_path):
    """Two runs with observation noise of std 0.1 injected and learned emission variances 0.04 and 0.09: learned
    std 0.25 ± 0.05, 0.15 above the injected one."""
    root = tmp_path / "runs"
    root.mkdir()
    for seed, var in enumerate([0.04, 0.09]):
        calibration = {"noise": {"model": {"emission_var": var}}}
        write_run(root, "amortized", seed, EVALS["amortized"], {"uncertainty": calibration}, obs_noise=0.1)
    out = tmp_path / "out"
    assert main([str(root / "*"), "--out", str(out), "--n-boot", "50"]) == 0
    noise = json.loads((out / "report.json").read_text())["groups"][0]["noise"]
    assert_over_seeds(noise["injected_obs_std"], 0.1, 0.0, 2)
    assert_over_seeds(noise["learned_obs_std"], 0.25, 0.05, 2)
    assert_over_seeds(noise["learned_minus_injected"], 0.15, 0.05, 2)
    assert ("| 0.1000 [0.1000, 0.1000] (2) | 0.2500 [-0.3853, 0.8853] (2) | 0.1500 [-0.4853, 0.7853] (2) |"
            in (out / "report.md").read_text())


def test_what_the_data_shows_reads_each_interval_against_no_effect(tmp_path):
    """semi_amortized beats amortized on return and log p(x) in every seed pair, with amortization gaps that overlap:
    'X better' twice, 'no difference shown' for the gap, 'no claim' where a side has one run."""
    root = tmp_path / "runs"
    root.mkdir()
    for seed in range(5):
        for inference, ret, log_px, gap in (("amortized", 100, 1.0, 0.5), ("semi_amortized", 900, 2.0, 0.5)):
            gaps = {"heldout": {"gaps": {"amortization": {"mean_per_step": gap + 0.1 * (-1) ** seed}},
                                "log_px": {"mean_per_step": log_px + 0.01 * seed}}}
            write_run(root, inference, seed, {6: {seed: ret + seed}}, {"gaps": gaps})
    write_run(root, "per_sequence", 0, {6: {0: 500}})
    out = tmp_path / "out"
    assert main([str(root / "*"), "--out", str(out), "--n-boot", "500"]) == 0
    report = json.loads((out / "report.json").read_text())
    diffs = {(d["inference"], d["measure"]): d for d in report["differences"]}
    assert set(diffs) == {("semi_amortized", "log_px"), ("semi_amortized", "amortization_gap")}
    assert diffs[("semi_amortized", "log_px")]["difference"] == pytest.approx(1.0)
    low, high = diffs[("semi_amortized", "log_px")]["ci"]   # Welch: 1 -+ t_{0.975, 8} * 0.01 = 1 -+ 0.0231
    assert (low, high) == pytest.approx((1 - 0.02306, 1 + 0.02306), abs=1e-4)
    low, high = diffs[("semi_amortized", "amortization_gap")]["ci"]
    assert low < 0 < high
    md = (out / "report.md").read_text()
    section = md.split("## What the data shows and what it does not")[1].split("\n## ")[0]
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): line for line in section.splitlines()
            if line.startswith("| `")}
    assert rows[("`semi_amortized` vs `amortized`", "cartpole", "final return: P(X > baseline)")].endswith(
        "| 1.00 [1.00, 1.00] | X better |")
    assert rows[("`semi_amortized` vs `amortized`", "cartpole", "held-out log p(x) (nats / step): X - baseline")
                ].endswith("| X better |")
    assert "no difference shown (the interval contains 0)" in rows[
        ("`semi_amortized` vs `amortized`", "cartpole", "amortization gap (nats / step, held out): X - baseline")]
    assert rows[("`per_sequence` vs `amortized`", "cartpole", "final return: P(X > baseline)")].endswith(
        "| 1, 5 | 1.00 | no interval (one run on a side): no claim |")
    assert "with 4 intervals about 0.2 would exclude" in section   # 3 above and the gap-return correlation
    # listed first: the two that exclude no effect, not the gap nor the correlation (its interval contains 0)
    assert ("**2 of the 4 intervals exclude it** (about 0.2 would by chance alone):\n\n"
            "- `semi_amortized` vs `amortized`, cartpole: final return: P(X > baseline) = 1.00 [1.00, 1.00] "
            "(runs 5, 5): X better\n- `semi_amortized` vs `amortized`, cartpole: held-out log p(x) (nats / step): "
            "X - baseline = 1.000 [0.977, 1.023] (runs 5, 5): X better\n\n|") in section

    # 3 semi_amortized runs against 2 amortized, every one above: the bootstrap interval collapses to [1, 1], but no
    # exact rank test at 3 vs 2 runs reaches p < 0.05 (smallest 2 / C(5, 2) = 0.2), so the section makes no claim
    three_two = tmp_path / "three_two"
    dirs = [str(root / name) for name in ("amortized--s0", "amortized--s1", "semi_amortized--s0",
                                          "semi_amortized--s1", "semi_amortized--s2")]
    assert main([*dirs, "--out", str(three_two), "--n-boot", "50"]) == 0
    (improvement,) = json.loads((three_two / "report.json").read_text())["improvement"]
    assert (improvement["ci"], improvement["smallest_p"]) == ([1.0, 1.0], pytest.approx(0.2))
    assert ("| 3, 2 | 1.00 [1.00, 1.00] | too few runs to tell (no exact rank test at these numbers of runs reaches "
            "p < 0.05: its smallest p is 0.20) |") in (three_two / "report.md").read_text()
    # and the chance count leaves it out: the two differences and the gap-return correlation
    assert "with 3 intervals about 0.2 would exclude" in (three_two / "report.md").read_text()
    assert "**1 of the 3 intervals excludes it**" in (three_two / "report.md").read_text()   # log p(x) only

    # 2 semi_amortized runs against 1 amortized: no interval anywhere, and the section says so
    few = tmp_path / "few"
    dirs = [str(root / name) for name in ("amortized--s0", "semi_amortized--s0", "semi_amortized--s1")]
    assert main([*dirs, "--out", str(few), "--n-boot", "50"]) == 0
    section = (few / "report.md").read_text().split("## What the data shows and what it does not")[1]
    assert "no comparison has an interval yet" in section and "would exclude" not in section
    assert "intervals exclude it" not in section
    assert "| amortization gap (nats / step, held out) | cartpole | 3 | " in section
    assert "no interval (fewer than 4 runs): no claim" in section


def test_failed_checks_of_a_gap_analysis_reach_the_report(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    gaps = gaps_json(0)
    gaps["heldout"] = {**gaps["heldout"], "failures": ["amortization gap -0.5 is below -3 standard errors"],
                       "warnings": ["refined K=5 is above AIS"]}
    run_dir = write_run(root, "amortized", 0, EVALS["amortized"], {"gaps": gaps})
    out = tmp_path / "out"
    assert main([str(root / "*"), "--out", str(out), "--n-boot", "50"]) == 0
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert warnings == [f"{run_dir}: gap analysis, heldout split: FAILED CHECK: amortization gap -0.5 is below -3 "
                        "standard errors", f"{run_dir}: gap analysis, heldout split: warning: refined K=5 is above AIS"]
    assert "FAILED CHECK: amortization gap -0.5" in (out / "report.md").read_text()


def test_markdown_rows_escape_pipes_inside_cells():
    from analysis.markdown import row, table
    assert row(["q(z_t | z_{t-1}, x)", 3]) == "| q(z_t \\| z_{t-1}, x) | 3 |"
    assert table(["a", "b"], [["1", "|x|"]]) == ["| a | b |", "|---|---|", "| 1 | \\|x\\| |", ""]


def test_encoder_excess_is_set_against_a_fresh_encoder_of_the_posteriors_kind():
    """Own amortization gap minus the fresh smoother's for amortized_smoothing, the fresh filter's for the others;
    None for per_sequence (no amortization gap), for runs without a gap analysis and for runs whose fresh encoders
    were fitted at a constant step size (or before the schedule was recorded), as is their conditioning gap."""
    values = {"amortization": 1.0, "amortization[filter]": 0.75, "amortization[smoother]": 0.25, "conditioning": 0.5}
    gaps = {"heldout": {"gaps": {name: {"mean_per_step": v} for name, v in values.items()}},
            "settings": {"encoder_lr_schedule": "cosine"}}
    run = lambda inference, g: Run(Path("."), AgentConfig(inference=inference), [], {"gaps": g, "uncertainty": None})
    assert encoder_excess(run("amortized", gaps)) == 0.25
    assert encoder_excess(run("semi_amortized", gaps)) == 0.25
    assert encoder_excess(run("amortized_smoothing", gaps)) == 0.75
    per_sequence = {"heldout": {"gaps": {k: v for k, v in gaps["heldout"]["gaps"].items() if k != "amortization"}}}
    assert encoder_excess(run("per_sequence", per_sequence)) is None
    assert encoder_excess(run("amortized", None)) is None
    conditioning = GAP_COLUMNS["conditioning"][1]
    assert conditioning(run("amortized", gaps)) == 0.5
    for unsettled in ({**gaps, "settings": {"encoder_lr_schedule": "constant"}}, {"heldout": gaps["heldout"]}):
        assert encoder_excess(run("amortized", unsettled)) is None and conditioning(run("amortized", unsettled)) is None
        assert GAP_COLUMNS["amortization"][1](run("amortized", unsettled)) == 1.0      # the own posterior's: kept


def test_what_the_data_shows_reads_each_groups_own_encoder_against_a_fresh_one(tmp_path):
    """Own minus fresh amortization gap 1.0, 1.1, 0.9 over 3 amortized seeds (settled fits): mean 1.0, t interval
    1.0 -+ 4.303 * 0.1 / sqrt(3), read 'own encoder worse' and counted among the intervals; one semi_amortized run:
    no claim; a run with fits at a constant step size is left out."""
    root = tmp_path / "runs"
    root.mkdir()
    def gaps(excess, schedule="cosine"):
        values = {"amortization": 0.5 + excess, "amortization[filter]": 0.5}
        return {"heldout": {"gaps": {k: {"mean_per_step": v} for k, v in values.items()}},
                "settings": {"encoder_lr_schedule": schedule}}
    for seed, excess in enumerate([1.0, 1.1, 0.9]):
        write_run(root, "amortized", seed, EVALS["amortized"], {"gaps": gaps(excess)})
    write_run(root, "semi_amortized", 0, EVALS["semi_amortized"], {"gaps": gaps(0.3)})
    write_run(root, "semi_amortized", 1, EVALS["semi_amortized"], {"gaps": gaps(9.0, "constant")})
    out = tmp_path / "out"
    assert main([str(root / "*"), "--out", str(out), "--n-boot", "50"]) == 0
    md = (out / "report.md").read_text()
    half = 4.302653 * 0.1 / np.sqrt(3)
    assert f"| `amortized` | cartpole | 3 | 1.000 [{1 - half:.3f}, {1 + half:.3f}] | own encoder worse |" in md
    assert "| `semi_amortized` | cartpole | 1 | 0.300 | no interval (one run): no claim |" in md
    # counted: this interval, the Welch interval of the amortization gaps (semi_amortized 2 runs, amortized 3) and
    # the correlation of return and gap over 5 runs (the probability of improvement at 2 vs 3 runs is not read)
    assert "with 3 intervals" in md


def test_conditioning_gaps_are_compared_between_posteriors_from_settled_fits_only(tmp_path):
    """Conditioning gap 3.0, 3.1, 2.9 (amortized_smoothing) against 0.5, 0.6, 0.4 (amortized, settled fits) and 9.0
    (amortized, fits at a constant step size: left out): difference 2.5 over 3 vs 3 runs, Welch's interval
    2.5 -+ t_{0.975, 4} * sqrt(0.01 / 3 + 0.01 / 3), read 'X worse' (a filter costs more on X's models)."""
    root = tmp_path / "runs"
    root.mkdir()
    def gaps(conditioning, schedule="cosine"):
        return {"heldout": {"gaps": {"conditioning": {"mean_per_step": conditioning}}},
                "settings": {"encoder_lr_schedule": schedule}}
    for inference, values in (("amortized_smoothing", [3.0, 3.1, 2.9]), ("amortized", [0.5, 0.6, 0.4])):
        for seed, value in enumerate(values):
            write_run(root, inference, seed, {6: {seed: 100 + seed}}, {"gaps": gaps(value)})
    write_run(root, "amortized", 3, {6: {3: 103}}, {"gaps": gaps(9.0, "constant")})
    out = tmp_path / "out"
    assert main([str(root / "*"), "--out", str(out), "--n-boot", "50"]) == 0
    (diff,) = [d for d in json.loads((out / "report.json").read_text())["differences"]
               if d["measure"] == "conditioning_gap"]
    assert (diff["inference"], diff["n"], diff["difference"]) == ("amortized_smoothing", [3, 3], pytest.approx(2.5))
    half = 2.776445 * np.sqrt(0.01 / 3 + 0.01 / 3)
    assert diff["ci"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-4)
    assert ("conditioning gap (nats / step, held out): X - baseline = "
            f"2.500 [{2.5 - half:.3f}, {2.5 + half:.3f}] (runs 3, 3): X worse") in (out / "report.md").read_text()


def test_a_report_cut_at_an_episode_leaves_out_analyses_of_later_models(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    gaps = {**gaps_json(0), "checkpoint_episode": 6}
    write_run(root, "amortized", 0, EVALS["amortized"], {"gaps": gaps, "uncertainty": {**UNCERTAINTY,
                                                                                       "checkpoint_episode": 6}})
    for cut, kept in ((3, False), (6, True)):
        out = tmp_path / f"out{cut}"
        assert main([str(root / "*"), "--out", str(out), "--n-boot", "50", "--until-episode", str(cut)]) == 0
        group = json.loads((out / "report.json").read_text())["groups"][0]
        assert group["runs"][0]["final_return"] == EVALS["amortized"][cut][0]
        analysed = (group["gaps"]["amortization"]["n"], group["uncertainty"]["obs"]["nll"]["n"])
        assert analysed == ((1, 1) if kept else (0, 0))
        assert ("## Gaps" in (out / "report.md").read_text()) == kept


def test_training_elbo_at_the_model_posterior_and_the_encoder_with_late_collapses(tmp_path):
    """Training ELBO e = episode + seed (seed 1 collapses to -50 at episode 4), at the encoder e - 1 for
    semi_amortized, refining on half its updates: per run the mean of the last 10 (here all 6) episodes, the gain per
    refining update (e - e_init) / 0.5 = 2, and the lowest value after episode 3."""
    root = tmp_path / "runs"
    root.mkdir()
    for inference in ("amortized", "semi_amortized"):
        for seed in (0, 1):
            run_dir = write_run(root, inference, seed, EVALS[inference])
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            for row in rows:
                row["elbo"] = -50.0 if (seed, row["episode"]) == (1, 4) else float(row["episode"] + seed)
                if inference == "semi_amortized":
                    row["elbo_init"], row["refined"] = row["elbo"] - 1, 0.5
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main([str(root / "*"), "--out", str(out)]) == 0
    groups = by_inference(json.loads((out / "report.json").read_text()))
    semi, amortized = groups["semi_amortized"]["training_elbo"], groups["amortized"]["training_elbo"]
    seed_means = [3.5, (2 + 3 + 4 - 50 + 6 + 7) / 6]
    assert_over_seeds(semi["elbo"], np.mean(seed_means), np.std(seed_means, ddof=1) / np.sqrt(2), 2)
    assert semi["elbo_init"]["mean"] == pytest.approx(np.mean(seed_means) - 1)
    assert_over_seeds(semi["refinement_gain"], 2.0, 0.0, 2)
    assert semi["lowest_late_elbo"]["mean"] == pytest.approx((4 - 50) / 2)
    assert amortized["elbo"]["n"] == 2 and amortized["elbo_init"]["n"] == amortized["refinement_gain"]["n"] == 0
    curves = groups["semi_amortized"]["curves"]
    assert curves["elbo"]["mean"] == pytest.approx([1.5, 2.5, 3.5, -23, 5.5, 6.5])   # not smoothed: the collapse shows
    assert curves["elbo_init"]["mean"] == pytest.approx(np.array(curves["elbo"]["mean"]) - 1)
    assert "elbo_init" not in groups["amortized"]["curves"]
    md = (out / "report.md").read_text()
    assert "## Training ELBO" in md and "| cartpole | semi_amortized |" in md and "2.00 [2.00, 2.00] (2)" in md
    assert "| cartpole | amortized | " in md.split("## Training ELBO")[1].split("##")[0]


def test_no_training_elbo_section_without_training_elbos(runs, tmp_path):
    assert main([str(runs / "*"), "--out", str(tmp_path / "out")]) == 0
    assert "## Training ELBO" not in (tmp_path / "out" / "report.md").read_text()
