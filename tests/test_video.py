"""Open-loop prediction videos: frame count and layout, reconstructions and predictions as computed by
hand, atomic GIF writing, clear errors."""
import os

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from agent.video import LABEL_HEIGHT, compose_frame, frame_size, open_loop_frames, open_loop_video, to_uint8
from world_models.base import ModelState, SequenceBatch
from world_models.posteriors import make_posterior
from world_models.rollout import rollout
from world_models.rssm import RSSM

STEPS = 12          # stored steps of the synthetic episode (T + 1)
SIDE = 64 * 2       # a 2x upscaled panel
H, W = frame_size()  # label strip + 128 + 2 * 2 margin, 3 panels + 4 margins


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RSSM((3, 64, 64), 1, deter_dim=8, z_dim=4, hidden=8)


@pytest.fixture(scope="module")
def posterior(model):
    torch.manual_seed(1)
    return make_posterior("amortized", model, hidden=8)


def make_episode(length=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    action = rng.uniform(-1, 1, (length, 1)).astype(np.float32)
    action[0] = 0.0
    return {"obs": rng.integers(0, 256, (length, 3, 64, 64), dtype=np.uint8), "action": action,
            "reward": rng.normal(size=length).astype(np.float32), "obs_valid": np.ones(length, bool)}


def panel(frame, i, margin=2):
    """Panel i of a frame, downsampled back to (3, 64, 64)."""
    left = margin + i * (SIDE + margin)
    top = LABEL_HEIGHT + margin
    return frame[top:top + SIDE:2, left:left + SIDE:2].transpose(2, 0, 1)


def test_layout_constants():
    assert (H, W) == (144, 392)
    assert frame_size(show_diff=False) == (144, 262)


def test_panels_are_named_in_the_label_strip():
    true, model = (np.full((3, 64, 64), v, np.uint8) for v in (10, 200))
    recon, pred = compose_frame(true, model, predicted=False), compose_frame(true, model, predicted=True)
    for frame, colour in ((recon, (0, 0, 0)), (pred, (255, 0, 0))):
        strip = frame[:LABEL_HEIGHT]
        text = (strip.min(-1) > 128).sum()              # white (antialiased) text on the gutter's colour
        assert text > 100 and (strip == colour).all(-1).sum() > strip.shape[1]
    assert not np.array_equal(recon[:LABEL_HEIGHT, 130:260], pred[:LABEL_HEIGHT, 130:260])   # posterior / open loop


def test_writes_readable_gif(tmp_path, model, posterior):
    episode = make_episode()
    out = tmp_path / "videos" / "open_loop.gif"
    path, mse = open_loop_video(model, posterior, episode, out, context_steps=5, horizon=50, fps=10)
    assert path == str(out) and out.exists()
    assert len(mse) == STEPS - 5 and all(np.isfinite(mse)) and all(m > 0 for m in mse)
    gif = iio.imread(out, index=None)
    assert gif.shape[:3] == (STEPS, H, W)               # min(context + horizon, T + 1) frames
    gif = gif[..., :3]
    frames, mse_again = open_loop_frames(model, posterior, episode, 5, 50)
    assert mse_again == mse                             # seeded: the same rollout every call
    assert frames.shape == (STEPS, H, W, 3)
    # GIF palettes quantize each frame, so the decoded GIF is only close to the frames written
    assert np.abs(gif.astype(np.int16) - frames).mean() < 20
    # the gutter marks open-loop predictions red, posterior reconstructions black
    corner = gif[:, 0, 0].astype(int)
    assert (corner[:5] < 40).all()
    assert (corner[5:, 0] > 200).all() and (corner[5:, 1:] < 60).all()
    assert [p for p in os.listdir(out.parent)] == ["open_loop.gif"]   # no temp file left


def test_horizon_caps_and_layout_without_difference(tmp_path, model, posterior):
    path, mse = open_loop_video(model, posterior, make_episode(), tmp_path / "v.gif", context_steps=3, horizon=4,
                                show_diff=False)
    assert len(mse) == 4
    assert iio.imread(path, index=None).shape[:3] == (7, *frame_size(show_diff=False))


def test_frames_match_manual_computation(model, posterior):
    episode = make_episode(seed=3)
    C = 4
    rng_state = torch.get_rng_state()
    frames, mse = open_loop_frames(model, posterior, episode, context_steps=C, horizon=50, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_state)         # seeded sampling leaves the global RNG alone
    assert frames.shape[0] == STEPS and len(mse) == STEPS - C

    obs = torch.from_numpy(episode["obs"]).float() / 255 - 0.5
    actions = torch.from_numpy(episode["action"])
    batch = SequenceBatch(obs[None, :C], actions[None, :C])
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        ro = rollout(model, posterior, batch, posterior.context(model, batch))
        recon = model.emission(ro.h, ro.z).mean[0]
        # open loop: prior means from the last posterior state, fed the true actions
        state = ModelState(ro.h[:, -1], ro.z[:, -1])
        for t in range(C, C + 2):
            h, prior = model.prior_step(state, actions[None, t], t)
            state = ModelState(h, prior.mean)
        pred = model.emission(state.h, state.z).mean[0]          # step C + 1

    t = 2                                                         # a reconstruction frame
    expected = np.clip((recon[t].numpy() + 0.5) * 255, 0, 255).round().astype(np.uint8)
    np.testing.assert_array_equal(panel(frames[t], 0), episode["obs"][t])
    np.testing.assert_array_equal(panel(frames[t], 1), expected)
    np.testing.assert_array_equal(panel(frames[t], 2), np.abs(episode["obs"][t].astype(int) - expected))
    np.testing.assert_array_equal(frames[t], compose_frame(episode["obs"][t], expected, predicted=False))
    assert (frames[t, 0, 0] == 0).all()

    expected = to_uint8(pred)                                     # a prediction frame
    np.testing.assert_array_equal(frames[C + 1], compose_frame(episode["obs"][C + 1], expected, predicted=True))
    assert tuple(frames[C + 1, 0, 0]) == (255, 0, 0)
    assert mse[1] == pytest.approx(float((pred - obs[C + 1]).pow(2).mean()), rel=1e-5)


def test_missing_observation_has_nan_mse(tmp_path, model):
    episode = make_episode()
    episode["obs_valid"][7] = False
    _, mse = open_loop_video(model, None, episode, tmp_path / "prior.gif", context_steps=5, horizon=3)
    assert np.isfinite(mse[0]) and np.isnan(mse[2]) and np.isfinite(mse[1])


def test_too_short_episode(tmp_path, model, posterior):
    with pytest.raises(ValueError, match="too short.*5 stored steps.*at least 6"):
        open_loop_video(model, posterior, make_episode(length=5), tmp_path / "v.gif", context_steps=5)
    assert not os.listdir(tmp_path)


def test_non_pixel_model(tmp_path):
    vector = RSSM((4,), 1, deter_dim=8, z_dim=4, hidden=8)
    with pytest.raises(ValueError, match="pixel model"):
        open_loop_video(vector, None, make_episode(), tmp_path / "v.gif")


def test_failed_write_keeps_old_file(tmp_path, model, monkeypatch):
    out = tmp_path / "v.gif"
    out.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        open_loop_video(model, None, make_episode(), out, context_steps=5, horizon=2)
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["v.gif"]
