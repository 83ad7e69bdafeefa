"""rlexp: Hydra-configured goal-conditioned manipulation RL experiments."""

import os

# Headless MuJoCo rendering: EGL works on this class of machine (OSMesa does not). Set before mujoco loads.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import logging  # noqa: E402

from rlexp.errors import ConfigError  # noqa: E402

logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL's "no accelerate module" INFO line


def build(cfg):  # noqa: ANN001, ANN201 - thin re-export that keeps `import rlexp` light
    """Build the ready-to-train SB3 model (with its env and replay buffer) from a composed config."""
    from rlexp.builder import build as _build

    return _build(cfg)


def compose(*overrides: str):  # noqa: ANN201
    """Compose the project's config with Hydra overrides, e.g. compose("+experiment=ch05_her_push")."""
    from rlexp.config import compose as _compose

    return _compose(*overrides)


__all__ = ["ConfigError", "build", "compose"]
