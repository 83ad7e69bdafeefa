"""Every preset in rlexp/conf/ composes and builds: each option of each group, in a valid combination, untrained.

Options are discovered from the files, so a new YAML in rlexp/conf/algo, env, encoder, buffer, routing or task is
covered without touching this file; NEEDS lists what an option needs besides the group defaults.
"""

from __future__ import annotations

import pytest

import rlexp
from rlexp.config import CONF_DIR

GROUPS = ("algo", "env", "encoder", "buffer", "routing", "task")
PIXELS = ["env=push_pixels"]
# (group, option) -> overrides that make a valid combination with it (everything else: rlexp/conf/config.yaml).
NEEDS: dict[tuple[str, str], list[str]] = {
    ("encoder", "flatten"): ["env.id=Pendulum-v1", "algo.policy=MlpPolicy"],  # a Box observation
    ("encoder", "nature_cnn"): [*PIXELS, "algo.policy=CnnPolicy", "env.pixels.goal_mode=none",  # one image Box
                                "env.pixels.proprio_indices=null", "env.wrappers=[{_target_:helpers.PixelsOnly}]"],
    ("encoder", "manipulation"): PIXELS,
    ("buffer", "pixel_her"): PIXELS,
    ("buffer", "her_drq"): PIXELS,
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


PRESETS = [(g, o) for g in GROUPS for o in options(g)]


def test_presets_are_discovered() -> None:
    assert {"td3", "flatten", "her_drq", "push_dense", "pick_and_place_dense", "critic", "env_anatomy"} <= {
        o for _, o in PRESETS}
    assert set(NEEDS) <= set(PRESETS), "NEEDS names a preset that no longer exists"


@pytest.mark.parametrize(("group", "option"), PRESETS, ids=[f"{g}={o}" for g, o in PRESETS])
def test_every_preset_builds(group: str, option: str) -> None:
    cfg = rlexp.compose(f"{group}={option}", *NEEDS.get((group, option), []), "n_envs=1", "device=cpu")
    if "buffer_size" in cfg.algo:
        cfg.algo.buffer_size = 1000
    model = rlexp.build(cfg)
    try:
        assert model.num_timesteps == 0 and model.get_env().num_envs == 1
    finally:
        model.get_env().close()
