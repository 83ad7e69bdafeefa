"""Recorded configs of runs made before a module move name the old class paths: they still build, evaluate, resume."""

from __future__ import annotations

import importlib

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

import rlexp
from rlexp import artifacts
from rlexp.components import MOVED_TARGETS
from rlexp.components.buffers import DrQHerReplayBuffer
from rlexp.config import config_hash, to_container
from rlexp.rundir import meta_of
from rlexp.validate import resolve_class

OLD_DRQ = "rlexp.components.augment.DrQHerReplayBuffer"


@pytest.mark.parametrize("old", sorted(MOVED_TARGETS))
def test_old_path_resolves_to_the_moved_class(old: str) -> None:
    new = MOVED_TARGETS[old]
    assert resolve_class(OmegaConf.create({"_target_": old}), "buffer") is get_class(new)
    with pytest.raises(ImportError):  # one way to import it: the old module is gone
        importlib.import_module(old.rsplit(".", 1)[0])


def test_every_preset_names_a_current_path() -> None:
    from rlexp.config import CONF_DIR

    text = "\n".join(p.read_text() for p in CONF_DIR.rglob("*.yaml"))
    assert not [old for old in MOVED_TARGETS if old in text]


def test_old_run_config_builds_loads_and_evaluates(tmp_path) -> None:  # noqa: ANN001
    from rlexp.evaluate import load_model, load_run_config, run_episodes

    cfg = rlexp.compose("+experiment=ch05_her_reach", "algo.buffer_size=1000", f"buffer._target_={OLD_DRQ}")
    model = rlexp.build(cfg)
    try:
        assert type(model.replay_buffer) is DrQHerReplayBuffer
        zip_path = tmp_path / "model.zip"
        model.save(zip_path)
    finally:
        model.get_env().close()
    artifacts.write_json(meta_of(zip_path), {"config": to_container(cfg), "total_steps": 0})
    recorded = load_run_config(zip_path)
    assert recorded.buffer._target_ == OLD_DRQ  # the record is read as written: its hash does not change
    loaded = load_model(zip_path, recorded, device="cpu")
    try:
        assert type(loaded.replay_buffer) is DrQHerReplayBuffer
        assert len(run_episodes(loaded, recorded, [0])) == 1
    finally:
        loaded.get_env().close()


def test_resume_accepts_a_recorded_config_with_an_old_path() -> None:
    from rlexp.training.resume import config_for_resume

    cfg = rlexp.compose("+experiment=ch05_her_reach", "buffer=her_drq")
    recorded = to_container(cfg)
    recorded["buffer"]["_target_"] = OLD_DRQ
    merged = config_for_resume(cfg, {"config": recorded}, ["+experiment=ch05_her_reach", "buffer=her_drq"])
    assert merged.buffer._target_ == OLD_DRQ  # the run's own config, so its checkpoints' hash still matches
    assert config_hash(merged) == config_hash(OmegaConf.create(recorded))


def test_old_pixel_wrapper_entry_still_wraps() -> None:
    from rlexp.components.envs import PixelObservation, make_env_from_cfg

    env = make_env_from_cfg({
        "id": "FetchPush-v4", "kwargs": {"render_mode": "rgb_array", "width": 84, "height": 84},
        "wrappers": [{"_target_": "rlexp.components.pixels.PixelObservation", "frame_stack": 2}],
    })
    try:
        assert isinstance(env, PixelObservation)
        obs, _ = env.reset(seed=0)
        assert obs["pixels"].shape == (6, 84, 84)
    finally:
        env.close()
