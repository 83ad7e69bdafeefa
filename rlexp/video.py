"""MP4 (and GIF) of a trained policy: seeded episodes, a distance overlay, pauses between episodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from rlexp import artifacts

PAUSE_FRAMES = 15


def _overlay(frame: np.ndarray, text: str) -> np.ndarray:
    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, img.width, 22), fill=(0, 0, 0))
    draw.text((6, 5), text, fill=(255, 255, 255))
    return np.asarray(img)


def record(model: Any, cfg: DictConfig, seeds: list[int], deterministic: bool = True,
           width: int = 640, height: int = 480) -> list[np.ndarray]:
    """Frames of one episode per seed, each frame captioned with the goal distance."""
    from omegaconf import OmegaConf

    from rlexp.components.envs import make_env_from_cfg

    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    # Pixel policies: render large for the video and let the wrapper downscale the policy's frames.
    if env_cfg.get("pixels"):
        env_cfg["pixels"]["resize"] = True
    for spec in env_cfg.get("wrappers") or ():  # runs configured before env.pixels existed
        if isinstance(spec, dict) and "resize" in spec:
            spec["resize"] = True
    env = make_env_from_cfg(env_cfg, render_mode="rgb_array", width=width, height=height)
    threshold = float(getattr(env.unwrapped, "distance_threshold", 0.05))
    frames: list[np.ndarray] = []
    try:
        for i, seed in enumerate(seeds):
            obs, _ = env.reset(seed=int(seed))
            done, step, caption = False, 0, ""
            while not done:
                action, _ = model.predict(obs, deterministic=deterministic)
                obs, _r, term, trunc, info = env.step(action)
                step += 1
                done = bool(term or trunc)
                caption = f"episode {i + 1}/{len(seeds)}  step {step}"
                if isinstance(obs, dict) and "achieved_goal" in obs:
                    d = float(np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"]))
                    caption += "  TARGET REACHED" if d < threshold else f"  distance to target {d * 100:.1f} cm"
                frames.append(_overlay(np.asarray(env.render()), caption))
            frames += [frames[-1]] * PAUSE_FRAMES
    finally:
        env.close()
    return frames


def write(frames: list[np.ndarray], mp4: Path, fps: int = 30, gif: bool = False) -> list[Path]:
    """MP4 via imageio-ffmpeg (libx264); the GIF is half resolution at half the frame rate."""
    import imageio.v2 as imageio

    def _mp4(tmp: Path) -> None:
        with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                macro_block_size=8) as writer:
            for f in frames:
                writer.append_data(f)

    written = [artifacts.atomic_write(mp4, _mp4)]
    if gif:
        small = [np.asarray(Image.fromarray(f).resize((f.shape[1] // 2, f.shape[0] // 2))) for f in frames[::2]]
        gif_path = mp4.parent / (mp4.name[: -len(".mp4")] + ".gif")
        written.append(artifacts.atomic_write(
            gif_path, lambda tmp: imageio.mimsave(tmp, small, format="GIF", duration=1000 * 2 / fps, loop=0)))
    return written
