"""Pieces of an analysis in worker processes (analysis/workers.py): seeded by name, the same in any process."""
from pathlib import Path

import pytest
import torch

from analysis.workers import PieceStore, Workers, cpu_seconds, piece_seed


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


def _count(calls, n: int) -> torch.Tensor:
    calls.append(n)      # in this process (one worker): how often the piece ran
    return torch.randn(n)


def test_a_store_keeps_finished_pieces_and_gives_them_back_instead_of_running_them(tmp_path):
    folder, calls = tmp_path / "pieces", []
    with Workers(1, seed=3, store=PieceStore(folder, {"settings": (1, 2)})) as w:
        first = w.submit("q*[own]", _count, calls, 4).result()
    assert calls == [4] and w.resumed == {}
    assert PieceStore.stored_core_seconds(folder) >= 0 and len(list(folder.glob("*.pt"))) == 1
    with Workers(1, seed=3, store=PieceStore(folder, {"settings": [1, 2]})) as w:      # the same key, read back
        again = w.submit("q*[own]", _count, calls, 4).result()
        other = w.submit("q*[filter]", _count, calls, 4).result()
    assert calls == [4, 4] and torch.equal(first, again) and list(w.resumed) == ["q*[own]"]
    assert set(w.resumed["q*[own]"]) == {"seconds", "core_seconds"}
    with Workers(2, seed=3) as w:                         # a stored piece is the one any call computes
        assert torch.equal(w.submit("q*[filter]", _draw, 4).result(), other)
    with Workers(1, seed=3, store=PieceStore(folder, {"settings": [1, 3]})) as w:      # other inputs: not reused
        w.submit("q*[own]", _count, calls, 4).result()
    assert calls == [4, 4, 4] and w.resumed == {} and len(list(folder.glob("*.pt"))) == 1
    assert PieceStore.stored_core_seconds(tmp_path / "absent") == 0
    with pytest.raises(ValueError, match="need a seed"):
        Workers(1, store=PieceStore(folder, {}))


def test_stored_pieces_survive_only_complete(tmp_path):
    """A piece's cost is written after its result: a result without its cost (a kill between the two) is run
    again, not loaded."""
    store, calls = PieceStore(tmp_path, {}), []
    with Workers(1, seed=0, store=store) as w:
        w.submit("a", _count, calls, 2).result()
    Path(store.path("a") + ".json").unlink()
    with Workers(1, seed=0, store=store) as w:
        w.submit("a", _count, calls, 2).result()
    assert calls == [2, 2] and w.resumed == {}
