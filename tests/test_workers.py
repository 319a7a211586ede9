"""Pieces of an analysis in worker processes (analysis/workers.py): seeded by name, the same in any process."""
import pytest
import torch

from analysis.workers import Workers, cpu_seconds, piece_seed


def _draw(n: int) -> torch.Tensor:
    return torch.randn(n)


def _fail(message: str):
    raise ValueError(message)


def test_pieces_are_seeded_by_name_the_same_in_this_process_and_in_workers():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with Workers(1, seed=5) as w:
        here = {name: w.submit(name, _draw, 3).result() for name in ("a", "b")}
    assert torch.equal(torch.random.get_rng_state(), before)     # the caller's own stream is left as it was
    with Workers(2, seed=5) as w:
        pending = {name: w.submit(name, _draw, 3) for name in ("b", "a")}
        there = {name: f.result() for name, f in pending.items()}
    assert all(torch.equal(here[k], there[k]) for k in here)
    assert not torch.equal(here["a"], here["b"])                   # different names, different draws
    with Workers(1, seed=6) as w:
        assert not torch.equal(w.submit("a", _draw, 3).result(), here["a"])
    assert piece_seed(5, "a") != piece_seed(6, "a")


def test_unseeded_pieces_draw_from_the_callers_stream():
    torch.manual_seed(0)
    expected = torch.randn(2)
    torch.manual_seed(0)
    assert torch.equal(Workers().submit("x", _draw, 2).result(), expected)


def test_a_piece_error_reaches_the_caller_and_bad_settings_are_refused():
    with Workers(2, seed=0) as w:
        with pytest.raises(ValueError, match="broken piece"):
            w.submit("x", _fail, "broken piece").result()
    with pytest.raises(ValueError, match="workers must be >= 1"):
        Workers(0, seed=0)
    with pytest.raises(ValueError, match="need a seed"):
        Workers(2)


def test_cpu_seconds_count_ended_workers():
    t0 = cpu_seconds()
    with Workers(2, seed=0) as w:
        for f in [w.submit(str(i), sum, range(10_000_000)) for i in range(2)]:
            f.result()
    assert cpu_seconds() - t0 > 0.05
