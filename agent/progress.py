"""The agent's progress line: episodes, env steps, model updates, the phase under way, and an ETA priced from
the work still planned (not from the average rate, which the fast random seed episodes would set)."""
from __future__ import annotations

import time
from typing import Optional

from tqdm import tqdm

from .config import AgentConfig


class RunETA:
    """Remaining seconds of a run: each episode still to come is priced by its kind, from the metrics lines of the
    episodes done.
    - seed episode (random actions, no update): mean seconds of the seed episodes seen;
    - any later episode: mean of train + collect seconds over the last `window` such episodes,
    - plus, per evaluation episode that follows it (AgentConfig.eval_episodes_after), the mean seconds of the
      evaluation episodes seen (an update episode's cost before any evaluation was seen).
    None until an update episode has been seen (nothing to price the rest with)."""

    def __init__(self, cfg: AgentConfig, window: int = 10):
        self.cfg, self.window = cfg, window
        self.seed_seconds: list[float] = []
        self.update_seconds: list[float] = []
        self.eval_seconds: list[float] = []

    def add(self, record: dict) -> None:
        """Take one episode's metrics line (metrics.jsonl)."""
        work = record.get("train_seconds", 0.0) + record["collect_seconds"]
        (self.seed_seconds if record["episode"] <= self.cfg.seed_episodes else self.update_seconds).append(work)
        if "eval_seconds" in record:
            self.eval_seconds.append(record["eval_seconds"] / record.get("eval_episodes", 1))

    def remaining(self, done: int) -> Optional[float]:
        """Seconds for episodes done + 1 .. cfg.episodes."""
        todo = range(done + 1, self.cfg.episodes + 1)
        seed = [e for e in todo if e <= self.cfg.seed_episodes]
        later = [e for e in todo if e > self.cfg.seed_episodes]
        if later and not self.update_seconds:
            return None
        mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
        per_update = mean(self.update_seconds[-self.window:])
        per_eval = mean(self.eval_seconds[-self.window:]) if self.eval_seconds else per_update
        evals = sum(self.cfg.eval_episodes_after(e) for e in todo)
        per_seed = mean(self.seed_seconds) if self.seed_seconds else 0.0
        return len(seed) * per_seed + len(later) * per_update + evals * per_eval


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class ProgressLine:
    """One tqdm line per run: 'cartpole amortized  23%| 23/100 ep [12:01, eta 41m10s, 23000 env steps,
    1800 updates, ret 512, eval 640, train 40/100]'. `phase(name, done, total)` shows work inside an episode
    (model updates, decisions), at most twice a second."""

    def __init__(self, cfg: AgentConfig, done: int, env_steps: int, enabled: bool, history: list[dict] = ()):
        """history: the metrics lines of the episodes done (a resumed run prices what is left from them)."""
        self.cfg, self.eta = cfg, RunETA(cfg)
        for record in history:
            self.eta.add(record)
        self.env_steps, self.last = env_steps, {}
        self._shown_at = 0.0
        self.bar = tqdm(total=cfg.episodes, initial=done, desc=f"{cfg.env} {cfg.inference}", unit="ep",
                        disable=not enabled, bar_format="{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} ep "
                                                        "[{elapsed}{postfix}]")
        self._show()

    def updates(self, done: int) -> int:
        return max(0, done - self.cfg.seed_episodes) * self.cfg.train_steps

    def episode_done(self, record: dict) -> None:
        self.eta.add(record)
        self.env_steps = record["env_steps"]
        self.last = {"ret": f"{record['train_return']:.0f}",
                     **({"eval": f"{record['eval_return']:.0f}"} if "eval_return" in record else {})}
        self.bar.update(1)
        self._show()

    def phase(self, name: str, done: int, total: Optional[int]) -> None:
        now = time.monotonic()
        if now - self._shown_at >= 0.5:
            self._show(f"{name} {done}" + (f"/{total}" if total else ""))

    def _show(self, phase: str = "") -> None:
        self._shown_at = time.monotonic()
        done = self.bar.n
        parts = [f"eta {duration(self.eta.remaining(done))}", f"{self.env_steps} env steps",
                 f"{self.updates(done)} updates"] + [f"{k} {v}" for k, v in self.last.items()] + ([phase] if phase else [])
        self.bar.set_postfix_str(", ".join(parts))

    def close(self) -> None:
        self.bar.close()
