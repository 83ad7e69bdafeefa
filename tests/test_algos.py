"""sb3-contrib algorithms on the Fetch tasks' dict observations with HER: TQC as it is, CrossQ through rlexp's
subclass (its joint obs/next-obs critic pass concatenates observation dicts key by key)."""

from __future__ import annotations

import pytest
import torch

from rlexp.builder import build
from rlexp.components.algos import CatDict
from rlexp.config import compose

pytestmark = pytest.mark.slow


def test_catdict_concatenates_key_by_key() -> None:
    a = CatDict(x=torch.zeros(2, 3), g=torch.ones(2, 1))
    b = CatDict(x=torch.ones(2, 3), g=torch.zeros(2, 1))
    both = torch.cat([a, b], dim=0)
    assert isinstance(both, CatDict) and both["x"].shape == (4, 3)
    assert torch.equal(both["g"][:, 0], torch.tensor([1.0, 1.0, 0.0, 0.0]))


@pytest.mark.parametrize("algo", ["tqc", "crossq"])
def test_her_push_presets_train(algo: str) -> None:
    """The ch05_her_push_{algo} recipe trains (gradient steps on HER dict batches) and changes its critic."""
    cfg = compose(f"+experiment=ch05_her_push_{algo}", "n_envs=2", "algo.learning_starts=100", "algo.buffer_size=2000",
                  "algo.batch_size=32", "seed=3")
    model = build(cfg)
    before = [p.detach().clone() for p in model.critic.parameters()]
    model.learn(160)
    after = list(model.critic.parameters())
    assert model.num_timesteps == 160 and model.replay_buffer.size() > 0
    assert any(not torch.equal(x, y) for x, y in zip(before, after, strict=True))
    model.env.close()
