"""The native elementwise kernels (world_models/native) against float64 references, and the imagination loop
with them against the same loop in eager PyTorch. Where no C compiler exists the kernel tests skip; where one
exists they must build."""
import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from world_models import native
from world_models.fused_imagine import EagerSteps, NativeSteps, elementwise_path, elementwise_steps, imagined_reward_sum
from world_models.rssm import RSSM

F64 = torch.float64
needs_compiler = pytest.mark.skipif(native._compiler() is None or not native.enabled_by_environment(),
                                    reason="no C compiler (or AGAP_NATIVE=0): the eager path is used")


def lib():
    k = native.kernels()
    assert k is not None, native.status()
    return k


def wide_inputs(rows, cols, seed, scale=4.0):
    """Random values plus the edges of exp's range and exact zeros, as a strided view (rows 3 wider than
    cols) whose padding is filled with a sentinel the kernels must not touch."""
    g = torch.Generator().manual_seed(seed)
    base = torch.full((rows, cols + 3), 12345.0)
    x = base[:, 1:cols + 1]
    x.copy_(scale * torch.randn(rows, cols, generator=g))
    special = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 100.0, -100.0, 1e-7, -1e-7, 20.0, -20.0])
    x[0, :min(cols, len(special))] = special[:cols]
    return base, x


@needs_compiler
def test_elu_kernel_matches_float64():
    base, x = wide_inputs(37, 53, 0)
    expected = F.elu(x.to(F64))
    p, ld = native.rows(x)
    lib().elu_rows(p, x.shape[0], x.shape[1], ld)
    torch.testing.assert_close(x.to(F64), expected, rtol=3e-7, atol=3e-7)
    assert (base[:, 0] == 12345).all() and (base[:, -2:] == 12345).all(), "the kernel wrote outside its view"


@needs_compiler
def test_add_elu_kernel_accumulates():
    _, y = wide_inputs(20, 41, 1)
    acc = torch.randn(20, 41)
    expected = acc.to(F64) + F.elu(y.to(F64))
    lib().add_elu_rows(*native.rows(acc), *native.rows(y), *y.shape)
    torch.testing.assert_close(acc.to(F64), expected, rtol=3e-7, atol=5e-7)


@needs_compiler
def test_gru_kernel_matches_pytorchs_gru_cell():
    """Pre-activations from a real nn.GRUCell's weights: the kernel's h equals the cell's output."""
    torch.manual_seed(0)
    N, I, D = 64, 7, 21
    cell = torch.nn.GRUCell(I, D)
    x, h_prev = 3 * torch.randn(N, I), torch.randn(N, D)
    gi, gh = F.linear(x, cell.weight_ih, cell.bias_ih), F.linear(h_prev, cell.weight_hh, cell.bias_hh)
    ru = gi[:, :2 * D] + gh[:, :2 * D]
    h = torch.empty(N, D)
    lib().gru_update_rows(*native.rows(h), *native.rows(ru), *native.rows(gi[:, 2 * D:]), *native.rows(gh[:, 2 * D:]),
                          *native.rows(h_prev), N, D)
    cell64 = cell.to(F64)
    torch.testing.assert_close(h.to(F64), cell64(x.to(F64), h_prev.to(F64)).detach(), rtol=1e-6, atol=1e-6)


@needs_compiler
def test_gru_kernel_saturates_cleanly():
    D = 12
    ru = torch.tensor([[-100.0] * D + [100.0] * D, [100.0] * D + [-100.0] * D])
    gi, gh, h_prev = torch.full((2, D), 100.0), torch.full((2, D), -1.0), torch.full((2, D), 0.5)
    h = torch.empty(2, D)
    lib().gru_update_rows(*native.rows(h), *native.rows(ru), *native.rows(gi), *native.rows(gh), *native.rows(h_prev), 2, D)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h[0], h_prev[0])                    # u = 1: h stays
    torch.testing.assert_close(h[1], torch.ones(D))                # u = 0, n = tanh(100 - 1) = 1


@needs_compiler
def test_sample_kernel_matches_softplus_std():
    _, mu_raw = wide_inputs(30, 2 * 17, 2, scale=8.0)
    eps = torch.randn(30, 17)
    z = torch.empty(30, 17)
    lib().sample_gaussian_rows(*native.rows(z), *native.rows(mu_raw), *native.rows(eps), 0.1, 30, 17)
    m64 = mu_raw.to(F64)
    expected = m64[:, :17] + (F.softplus(m64[:, 17:]) + 0.1) * eps.to(F64)
    torch.testing.assert_close(z.to(F64), expected, rtol=1e-6, atol=1e-6)


@needs_compiler
@pytest.mark.parametrize("sampled", [True, False])
def test_imagination_with_kernels_as_accurate_as_eager(sampled):
    """Both float32 loops against the float64 loop: the kernels' error is of the eager loop's size."""
    torch.manual_seed(0)
    model = RSSM((5,), 2, deter_dim=160, z_dim=12, hidden=120)
    g = torch.Generator().manual_seed(3)
    N, H = 300, 6
    actions = torch.rand(N, H, 2, generator=g) * 2 - 1
    h0, z0 = torch.randn(1, 160, generator=g), torch.randn(1, 12, generator=g)
    noise = torch.randn(H, N, 12, generator=g) if sampled else None
    exact = imagined_reward_sum(model.to(F64), h0.to(F64), z0.to(F64), actions.to(F64),
                                None if noise is None else noise.to(F64))
    model.float()
    fast = imagined_reward_sum(model, h0, z0, actions, noise, native=True)
    eager = imagined_reward_sum(model, h0, z0, actions, noise, native=False)
    err_fast, err_eager = (fast.to(F64) - exact).abs().max(), (eager.to(F64) - exact).abs().max()
    assert err_fast < 1e-5 * exact.abs().max() + 1e-6
    assert err_fast < 4 * err_eager + 1e-6, (err_fast, err_eager)


def test_steps_are_chosen_by_dtype_and_request():
    f32, f64 = torch.zeros(1, 3), torch.zeros(1, 3, dtype=F64)
    assert isinstance(elementwise_steps(f64, 4, 8), EagerSteps)             # kernels are float32 only
    assert isinstance(elementwise_steps(f32, 4, 8, native=False), EagerSteps)
    with pytest.raises(RuntimeError, match="native elementwise kernels requested but unavailable"):
        elementwise_steps(f64, 4, 8, native=True)
    if native.kernels() is not None:
        assert isinstance(elementwise_steps(f32, 4, 8), NativeSteps)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(2)                      # eager passes use both threads: eager by default
            assert isinstance(elementwise_steps(f32, 4, 8), EagerSteps)
            assert isinstance(elementwise_steps(f32, 4, 8, native=True), NativeSteps)
            assert elementwise_path().startswith("eager PyTorch (torch runs 2 threads")
        finally:
            torch.set_num_threads(threads)


def test_rows_rejects_what_the_kernels_cannot_take():
    for bad in (torch.zeros(3, 4, dtype=F64), torch.zeros(3, 4).t(), torch.zeros(2, 3, 4)):
        with pytest.raises(ValueError, match="2-d float32 CPU tensors with contiguous rows"):
            native.rows(bad)
    x = torch.zeros(5, 9)[:, 2:6]
    assert native.rows(x) == (x.data_ptr(), 9)


@needs_compiler
def test_build_is_cached_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    monkeypatch.setenv("AGAP_CACHE_DIR", str(tmp_path))
    compiler = native._compiler()
    first = native._build(compiler)
    mtime = first.stat().st_mtime_ns
    assert native._build(compiler) == first and first.stat().st_mtime_ns == mtime    # not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


@needs_compiler
def test_a_cached_library_that_does_not_load_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("AGAP_CACHE_DIR", str(tmp_path))
    compiler = native._compiler()
    path = native._build(compiler)
    path.write_bytes(b"truncated")
    lib, again = native._load(compiler)
    assert again == path and path.stat().st_size > 1000
    x = torch.tensor([[-1.0, 2.0]])
    lib.elu_rows(x.data_ptr(), 1, 2, 2)
    torch.testing.assert_close(x, F.elu(torch.tensor([[-1.0, 2.0]])))


def test_disabled_by_environment_and_loading_keeps_denormals():
    """AGAP_NATIVE=0 keeps the eager path, with status() saying so; loading the library must not switch the
    process to flush-to-zero (what linking with -ffast-math does with gcc < 13). In a fresh process, since
    kernels() is loaded once per process."""
    code = ("import torch; from world_models import native; lib = native.kernels(); "
            "print(lib is None, native.status()); x = torch.tensor([1e-38]) / 1000; print(x.item() != 0)")
    env = {**os.environ, "AGAP_NATIVE": "0"}
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert off.returncode == 0, off.stderr
    assert off.stdout.splitlines() == ["True eager PyTorch (native kernels disabled by AGAP_NATIVE=0)", "True"]
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(__file__)))
    assert on.returncode == 0, on.stderr
    assert on.stdout.splitlines()[1] == "True", "loading the native kernels flushed denormals to zero"


@needs_compiler
def test_kernels_propagate_nan_and_infinity_as_pytorch_does():
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[nan, inf, -inf, 1.0, -1.0]])
    lib().elu_rows(*native.rows(x)[:1], 1, 5, 5)
    torch.testing.assert_close(x, F.elu(torch.tensor([[nan, inf, -inf, 1.0, -1.0]])), equal_nan=True)
    D = 4
    ru = torch.tensor([[nan, 0, 0, 0, 0, nan, 0, 0]])
    gi, gh, h_prev = torch.tensor([[0.0, nan, 0, inf]]), torch.zeros(1, D), torch.tensor([[0.0, 0, nan, 0]])
    h = torch.empty(1, D)
    lib().gru_update_rows(*native.rows(h), *native.rows(ru), *native.rows(gi), *native.rows(gh), *native.rows(h_prev), 1, D)
    r, u = torch.sigmoid(ru).split(D, 1)
    n = torch.tanh(gi + r * gh)
    torch.testing.assert_close(h, n + u * (h_prev - n), equal_nan=True)
    mu_raw, eps, z = torch.tensor([[0.0, nan, nan, 1.0]]), torch.ones(1, 2), torch.empty(1, 2)
    lib().sample_gaussian_rows(*native.rows(z), *native.rows(mu_raw), *native.rows(eps), 0.1, 1, 2)
    assert z[0, 0].isnan() and z[0, 1].isnan()


@needs_compiler
def test_native_steps_check_shapes_before_touching_memory():
    steps = NativeSteps(lib())
    h = torch.empty(10, 4)
    with pytest.raises(ValueError, match=r"ru must have shape \(10, 8\) for an output of shape \(10, 4\), got \(9, 8\)"):
        steps.gru_(h, torch.zeros(9, 8), torch.zeros(10, 4), torch.zeros(10, 4), torch.zeros(10, 4))
    with pytest.raises(ValueError, match="eps must have shape"):
        steps.sample_(h, torch.zeros(10, 8), torch.zeros(10, 3), 0.1)
