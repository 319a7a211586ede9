"""Launch a sweep of agent runs (run_agent.py) over a grid of settings, each run a Ray task.

    python -m sweeps.launch --out runs/study --env cartpole --inference amortized semi_amortized \\
        --seeds 0 1 2 --grid missing_every=none,2 --set episodes=30

launches 2 inference types x 2 grid values x 3 seeds = 12 runs, each in
runs/study/<env>-<inference>[-<key><value> for each --grid key]-s<seed> (here e.g.
runs/study/cartpole-semi_amortized-missing_every2-s1), with run_agent.py's output appended to log.txt there.
--grid KEY=V1,V2,... and --set KEY=VALUE take any AgentConfig setting (run_agent.py --help lists them);
"none" is an optional setting's default.

Run the same command again at any time: finished runs (metrics.jsonl holds as many lines as config.json's
episodes) are skipped, interrupted ones resumed from their last checkpoint (also to extend finished runs with a
larger --set episodes), new ones started. A run directory whose config.json holds other settings is reported
as failed and left untouched. A failed run does not stop the others; its exit code and the end of its log are
printed. At the end a table (and <out>/sweep_summary.json) gives each run's status, seconds and final
evaluation return; the exit code is 1 if any run failed, 0 otherwise, and 2 for bad input.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agent.config import WANDB_MODES, AgentConfig

from .execute import agent_command, log_tail, run_logged
from .grid import SweepError, expand, parse_assignments
from .status import CONFLICT, NEW, RESUME, SKIP, Plan, plan_run
from .summary import FAILED, FINISHED, NOT_STARTED, RESUMED, SKIPPED, record, table, write_summary


def parse_args(argv=None) -> argparse.Namespace:
    defaults = AgentConfig()
    p = argparse.ArgumentParser(prog="python -m sweeps.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the sweep's directory; one run directory per run in it")
    p.add_argument("--env", nargs="+", default=[defaults.env], help=f"env names (default: {defaults.env})")
    p.add_argument("--inference", nargs="+", default=[defaults.inference],
                   help=f"posterior names (default: {defaults.inference})")
    p.add_argument("--seeds", nargs="+", type=int, default=[defaults.seed], help=f"seeds (default: {defaults.seed})")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="one more grid axis over an AgentConfig setting (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an AgentConfig setting for every run (repeatable)")
    p.add_argument("--wandb", choices=WANDB_MODES, default="offline", help="wandb mode of every run (default: offline)")
    p.add_argument("--name", default=None, help="sweep name, the runs' wandb group (default: the --out directory's name)")
    p.add_argument("--cpus-per-run", type=int, default=1, help="CPUs (and torch threads) per run (default: 1)")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="most runs at once (default: the Ray cluster's CPUs / --cpus-per-run)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to use, e.g. auto or ray://host:10001 (it must see this repository and --out "
                        "at the same paths); default: start a local Ray instance with --max-concurrent x "
                        "--cpus-per-run CPUs (all CPUs if --max-concurrent is not given)")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and what would be done; launch nothing")
    return p.parse_args(argv)


def make_plans(args) -> list[Plan]:
    """The sweep's runs, each config validated, and what to do with each (raises SweepError on bad input)."""
    if args.cpus_per_run < 1:
        raise SweepError(f"--cpus-per-run must be >= 1, got {args.cpus_per_run}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise SweepError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    grid = parse_assignments(args.grid, "--grid", multiple=True)
    fixed = parse_assignments(args.set, "--set", multiple=False)
    specs = expand(args.env, args.inference, args.seeds, grid, {**fixed, "wandb": args.wandb})
    return [plan_run(spec, args.out) for spec in specs]


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    try:
        plans = make_plans(args)
    except SweepError as e:
        print(f"sweeps.launch: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for plan in plans:
            print(f"{plan.spec.name}: {plan.action}" + (f": {plan.reason}" if plan.reason else ""))
        return 0
    records = {}
    for plan in plans:
        if plan.action == SKIP:
            records[plan.spec.name] = record(plan.spec.name, plan.run_dir, SKIPPED)
        elif plan.action == CONFLICT:
            print(f"{plan.spec.name} failed: {plan.reason}", file=sys.stderr)
            records[plan.spec.name] = record(plan.spec.name, plan.run_dir, FAILED, message=plan.reason)
    to_launch = [plan for plan in plans if plan.action in (NEW, RESUME)]
    name = args.name or args.out.name
    if to_launch:
        try:
            records.update(run_on_ray(to_launch, args, group=name))
        except KeyboardInterrupt:   # Ray stops the runs with their run_agent.py; they resume on the next launch
            print("sweeps.launch: interrupted; run the same command again to resume", file=sys.stderr)
            return 130
    ordered = [records[plan.spec.name] for plan in plans]
    print(table(ordered))
    write_summary(args.out / "sweep_summary.json", name, ordered)
    return 1 if any(r["status"] == FAILED for r in ordered) else 0


def run_on_ray(plans: list[Plan], args, group: str, task_fn=run_logged, task_args=None, on_record=None,
               admit=None) -> dict[str, dict]:
    """Run the plans as Ray tasks, at most --max-concurrent at once, on the Ray session already started in
    this process, or else on --address or a new local instance; return each run's record by name.
    Each task is task_fn(*task_args(plan)), which returns (exit code, seconds); by default the run's
    run_agent.py command with its output appended to log.txt. on_record(plan, record) is called in this process
    as each run ends (e.g. to commit its results). admit(plan), called as a run is about to start, returns why not
    to start it ("" to start it): such a run is recorded NOT_STARTED and the next one is tried."""
    import ray

    started = not ray.is_initialized()
    if started and args.address:
        ray.init(address=args.address)
    elif started:
        cpus = args.max_concurrent * args.cpus_per_run if args.max_concurrent else max(os.cpu_count(), args.cpus_per_run)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False)
    task_args = task_args or (lambda plan: (agent_command(plan.spec.config, plan.run_dir, plan.action == RESUME,
                                                          args.cpus_per_run, group),
                                            str(plan.run_dir), args.cpus_per_run))
    try:
        limit = args.max_concurrent or max(1, int(ray.cluster_resources().get("CPU", 1)) // args.cpus_per_run)
        return wait_for_runs(ray, plans, limit, ray.remote(task_fn).options(num_cpus=args.cpus_per_run, max_retries=0),
                             task_args, on_record or (lambda plan, r: None), admit or (lambda plan: ""))
    finally:
        if started:
            ray.shutdown()


def wait_for_runs(ray, plans: list[Plan], limit: int, task, task_args, on_record, admit) -> dict[str, dict]:
    """Submit the runs, keeping at most `limit` in flight, and collect their records as they end (with a
    progress bar); failures are printed with their exit code and the end of their log as they happen."""
    from tqdm import tqdm

    queue, in_flight, records = list(plans), {}, {}
    with tqdm(total=len(plans), desc="sweep", unit="run") as bar:
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                plan = queue.pop(0)
                if reason := admit(plan):
                    records[plan.spec.name] = record(plan.spec.name, plan.run_dir, NOT_STARTED, message=reason)
                    bar.write(f"{plan.spec.name}: {reason}")
                    bar.update(1)
                    continue
                in_flight[task.remote(*task_args(plan))] = plan
            if not in_flight:
                break
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=10)
            if not done:
                bar.refresh()   # the elapsed time
                continue
            plan = in_flight.pop(done[0])
            r = records[plan.spec.name] = outcome(ray, plan, done[0])
            if r["status"] == FAILED:
                bar.write(f"{r['name']} failed: {r['message']}; last lines of {plan.run_dir / 'log.txt'}:\n"
                          f"{r['log_tail']}", file=sys.stderr)
            on_record(plan, r)
            bar.update(1)
    return records


def outcome(ray, plan: Plan, ref) -> dict:
    """The record of a run whose Ray task has ended."""
    name = plan.spec.name
    try:
        code, seconds = ray.get(ref)
    except ray.exceptions.RayError as e:
        return record(name, plan.run_dir, FAILED, message=f"its Ray task failed: {e}", log=log_tail(plan.run_dir))
    if code != 0:
        return record(name, plan.run_dir, FAILED, seconds, code, f"exit code {code}", log_tail(plan.run_dir))
    return record(name, plan.run_dir, RESUMED if plan.action == RESUME else FINISHED, seconds, code)


if __name__ == "__main__":
    sys.exit(main())
