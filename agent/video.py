"""Open-loop prediction videos of a pixel world model on one stored episode.

The posterior infers the model state over the first `context_steps` observations (one rollout of
the posterior on that prefix); from the last inferred state the model predicts the following
`horizon` steps open loop, fed the episode's true actions, with z_t = the prior mean at every step.
Each video frame shows, side by side:

    [ true o_t | model x_t | |o_t - x_t| ]        (the difference panel only with show_diff=True)

every panel 64x64 upscaled `scale` times (nearest neighbour), separated and surrounded by a
`margin`-pixel gutter, under a 12-pixel strip that names the panels: "truth", "model: posterior" or
"model: open loop", "|truth - model|". The gutter is the marker too: black on posterior reconstructions
(the context steps), red on open-loop predictions. With the defaults (scale 2, margin 2, show_diff) a
frame is 144 x 392 pixels (H x W); without the difference panel 144 x 262.

The model shows emission means, mapped from the model's space (x / 255 - 0.5) back to uint8 with
clip((x + 0.5) * 255). The video is an animated GIF written with Pillow (no ffmpeg needed).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from world_models.base import ModelState, SequenceBatch, SequenceModel
from world_models.networks import PIXEL_SHAPE, is_pixels
from world_models.rollout import rollout

from .checkpoint import write_atomic

RECONSTRUCTION_COLOUR = (0, 0, 0)
PREDICTION_COLOUR = (255, 0, 0)
LABEL_HEIGHT = 12       # pixels of the strip above the panels that names them


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model space (x / 255 - 0.5) -> uint8 images, clip((x + 0.5) * 255), rounded."""
    return ((x.detach().float().cpu() + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def frame_size(scale: int = 2, margin: int = 2, show_diff: bool = True) -> tuple[int, int]:
    """(height, width) of one video frame: the label strip, then the panels in their gutter."""
    panels = 3 if show_diff else 2
    side = PIXEL_SHAPE[1] * scale
    return LABEL_HEIGHT + side + 2 * margin, panels * side + (panels + 1) * margin


def compose_frame(true: np.ndarray, model: np.ndarray, predicted: bool, scale: int = 2, margin: int = 2,
                  show_diff: bool = True) -> np.ndarray:
    """One (H, W, 3) uint8 frame from a true and a model image, each (3, 64, 64) uint8."""
    panels = [true, model]
    if show_diff:
        panels.append(np.abs(true.astype(np.int16) - model.astype(np.int16)).astype(np.uint8))
    height, width = frame_size(scale, margin, show_diff)
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = PREDICTION_COLOUR if predicted else RECONSTRUCTION_COLOUR
    side = PIXEL_SHAPE[1] * scale
    labels = ["truth", "model: open loop" if predicted else "model: posterior", "|truth - model|"]
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    for i, label in enumerate(labels[:len(panels)]):
        draw.text((margin + i * (side + margin) + 1, 0), label, fill=(255, 255, 255), font=ImageFont.load_default())
    frame = np.array(image)
    for i, panel in enumerate(panels):
        big = panel.transpose(1, 2, 0).repeat(scale, 0).repeat(scale, 1)
        left = margin + i * (side + margin)
        frame[LABEL_HEIGHT + margin:LABEL_HEIGHT + margin + side, left:left + side] = big
    return frame


def _check(model: SequenceModel, episode: dict, context_steps: int, horizon: int, fps: float) -> int:
    """Raise ValueError on unusable input; return the episode's stored length (T + 1)."""
    if not is_pixels(getattr(model, "obs_shape", ())):
        raise ValueError(f"open-loop videos need a pixel model with obs_shape {PIXEL_SHAPE}; "
                         f"{type(model).__name__} has obs_shape {tuple(getattr(model, 'obs_shape', ()))}")
    if context_steps < 1 or horizon < 1:
        raise ValueError(f"context_steps and horizon must be >= 1, got {context_steps} and {horizon}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    missing = [key for key in ("obs", "action") if key not in episode]
    if missing:
        raise ValueError(f"episode lacks arrays {missing}; it has {sorted(episode)}")
    obs = np.asarray(episode["obs"])
    if obs.dtype != np.uint8 or tuple(obs.shape[1:]) != PIXEL_SHAPE:
        raise ValueError(f"episode obs must be uint8 (T + 1, {', '.join(map(str, PIXEL_SHAPE))}) pixels, got "
                         f"{obs.dtype} {tuple(obs.shape)}")
    length = len(obs)
    if len(episode["action"]) != length:
        raise ValueError(f"episode has {length} observations but {len(episode['action'])} actions; "
                         f"both must be T + 1 long")
    if length <= context_steps:
        raise ValueError(f"episode is too short for an open-loop video: it has {length} stored steps, but "
                         f"context_steps={context_steps} leaves none to predict (needs at least "
                         f"{context_steps + 1})")
    return length


@torch.no_grad()
def open_loop_predictions(model: SequenceModel, posterior, episode: dict, context_steps: int = 5,
                          horizon: int = 50, seed: Optional[int] = 0):
    """Reconstructions and open-loop predictions in model space.

    Returns (recon (C, 3, 64, 64), pred (P, 3, 64, 64), mse (P,)) with C = context_steps and
    P = min(horizon, T + 1 - context_steps): recon[t] decodes the posterior state at step t (one
    rollout of the posterior on the first C steps, sampled under `seed` so that the result is
    reproducible; seed=None uses the global RNG), pred[k] is the emission mean at step C + k.
    mse[k] is the mean squared error of pred[k] against the true frame in model space (x / 255 - 0.5,
    i.e. pixels scaled to [0, 1]); NaN where the true observation is missing (obs_valid False).
    posterior=None infers with the model's prior.
    """
    length = _check(model, episode, context_steps, horizon, fps=1.0)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    obs = torch.from_numpy(np.asarray(episode["obs"])).to(device=device, dtype=dtype).div(255.0).sub(0.5)
    actions = torch.as_tensor(np.asarray(episode["action"]), device=device, dtype=dtype)
    valid = torch.as_tensor(np.asarray(episode.get("obs_valid", np.ones(length, bool))), device=device,
                            dtype=torch.bool)
    C, P = context_steps, min(horizon, length - context_steps)
    batch = SequenceBatch(obs[None, :C], actions[None, :C], valid[None, :C])

    if seed is None:
        rng = torch.random.fork_rng(enabled=False)
    else:
        rng = torch.random.fork_rng(devices=[device] if device.type != "cpu" else [], device_type=device.type)
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        ctx = None if posterior is None else posterior.context(model, batch)
        ro = rollout(model, posterior, batch, ctx)
    recon = model.emission(ro.h, ro.z).mean[0]

    state = ModelState(ro.h[:, -1], ro.z[:, -1])
    hs, zs = [], []
    for t in range(C, C + P):
        h, prior = model.prior_step(state, actions[None, t], t)
        z = prior.mean
        hs.append(h); zs.append(z)
        state = ModelState(h, z)
    pred = model.emission(torch.stack(hs, 1), torch.stack(zs, 1)).mean[0]
    mse = (pred - obs[C:C + P]).pow(2).flatten(1).mean(1)
    mse = torch.where(valid[C:C + P], mse, torch.full_like(mse, float("nan")))
    return recon, pred, mse


def open_loop_frames(model: SequenceModel, posterior, episode: dict, context_steps: int = 5, horizon: int = 50,
                     scale: int = 2, margin: int = 2, show_diff: bool = True, seed: Optional[int] = 0):
    """The video's frames (N, H, W, 3) uint8, N = min(context_steps + horizon, T + 1), and the per-step
    prediction MSEs (a list of P floats); see the module docstring for the layout."""
    recon, pred, mse = open_loop_predictions(model, posterior, episode, context_steps, horizon, seed)
    images = to_uint8(torch.cat([recon, pred], 0))
    true = np.asarray(episode["obs"])
    frames = np.stack([compose_frame(true[t], images[t], t >= context_steps, scale, margin, show_diff)
                       for t in range(len(images))])
    return frames, [float(v) for v in mse]


def write_gif(frames: np.ndarray, path, fps: float = 10.0) -> str:
    """Write (N, H, W, 3) uint8 frames as a looping GIF, atomically (temp file + os.replace)."""
    images = [Image.fromarray(frame) for frame in frames]
    duration = max(10, int(round(1000.0 / fps)))          # GIF stores delays in 10 ms units
    return write_atomic(path, lambda f: images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                                                        duration=duration, loop=0))


@torch.no_grad()
def open_loop_video(model: SequenceModel, posterior, episode: dict, path, context_steps: int = 5,
                    horizon: int = 50, fps: float = 10.0, show_diff: bool = True, scale: int = 2,
                    seed: Optional[int] = 0) -> tuple[str, list[float]]:
    """Write an open-loop prediction GIF of one stored pixel episode to `path`.

    The posterior infers the state over the first `context_steps` observations; the model then predicts
    the next min(horizon, T + 1 - context_steps) steps open loop from the episode's true actions
    (z = prior mean). Frames: [true | model | |difference|], each panel upscaled `scale` times, red gutter
    on open-loop predictions, black on posterior reconstructions.

    Returns (path, mse): mse[k] is the mean squared error (pixels scaled to [0, 1]) of the prediction
    at step context_steps + k, NaN where that observation is missing. Raises ValueError for a non-pixel
    model or an episode with no step left to predict.
    """
    _check(model, episode, context_steps, horizon, fps)
    frames, mse = open_loop_frames(model, posterior, episode, context_steps, horizon, scale=scale,
                                   show_diff=show_diff, seed=seed)
    return write_gif(frames, path, fps), mse
