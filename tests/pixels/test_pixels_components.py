"""Pixel Push components: the checks the book's labs run (book ch9 labs), on small inputs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.sac.policies import MultiInputPolicy

from rlexp.components.buffers import augment_batch, random_shift
from rlexp.components.encoders import ManipulationCNN, ManipulationExtractor, SpatialSoftmax
from rlexp.components.policies import CriticEncoderMultiInputPolicy, routing_kwargs
from rlexp.errors import ConfigError


def push_like_space(image: tuple[int, int, int] = (12, 84, 84), proprio: int = 10) -> gym.spaces.Dict:
    spaces = {
        "pixels": gym.spaces.Box(0, 255, image, np.uint8),
        "achieved_goal": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
        "desired_goal": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
    }
    if proprio:
        spaces["proprioception"] = gym.spaces.Box(-np.inf, np.inf, (proprio,), np.float64)
    return gym.spaces.Dict(spaces)


# ---------------------------------------------------------------- encoders


def test_manipulation_cnn_84_to_21() -> None:
    assert ManipulationCNN(12)(th.zeros(4, 12, 84, 84)).shape == (4, 32, 21, 21)
    assert ManipulationCNN(3)(th.zeros(2, 3, 84, 84)).shape == (2, 32, 21, 21)
    convs = [m for m in ManipulationCNN(12).modules() if isinstance(m, th.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 4
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1), (2, 2)]


@pytest.mark.parametrize(
    ("row", "col", "expected"), [(0, 0, (-1.0, -1.0)), (10, 10, (0.0, 0.0)), (20, 0, (-1.0, 1.0))]
)
def test_spatial_softmax_peak_coordinates(row: int, col: int, expected: tuple[float, float]) -> None:
    ss = SpatialSoftmax(21, 21, 1)
    x = th.zeros(1, 1, 21, 21)
    x[0, 0, row, col] = 50.0
    out = ss(x)
    assert out.shape == (1, 2)  # [x coords..., y coords...]
    assert out[0, 0].item() == pytest.approx(expected[0], abs=1e-3)
    assert out[0, 1].item() == pytest.approx(expected[1], abs=1e-3)


def test_spatial_softmax_temperature_is_its_only_parameter_and_learns() -> None:
    ss = SpatialSoftmax(5, 7, 3)
    assert [n for n, _ in ss.named_parameters()] == ["temperature"]
    out = ss(th.randn(4, 3, 5, 7))
    assert out.shape == (4, 6) and out.abs().max() <= 1.0
    out[:, :3].sum().backward()
    assert ss.temperature.grad is not None and th.isfinite(ss.temperature.grad)


@pytest.mark.parametrize(
    ("kwargs", "proprio", "dim"), [({}, 10, 80), ({"spatial_softmax": False}, 10, 66), ({}, 0, 70)]
)
def test_extractor_features_dim(kwargs: dict, proprio: int, dim: int) -> None:
    space = push_like_space(proprio=proprio)
    ext = ManipulationExtractor(space, **kwargs)
    assert ext.features_dim == dim
    obs = {k: th.as_tensor(np.stack([s.sample() for _ in range(2)])).float() for k, s in space.spaces.items()}
    assert ext(obs).shape == (2, dim)


def test_extractor_rejects_state_observations() -> None:
    with pytest.raises(ValueError, match="no image key"):
        ManipulationExtractor(gym.spaces.Dict({"v": gym.spaces.Box(-1, 1, (4,))}))


# ---------------------------------------------------------------- DrQ


def test_random_shift_properties() -> None:
    th.manual_seed(0)
    const = th.full((3, 9, 16, 20), 77, dtype=th.uint8)
    assert th.equal(random_shift(const, 4), const)  # replicate padding keeps a constant image exact
    img = th.zeros(400, 1, 21, 21)
    img[:, 0, 10, 10] = 1.0
    out = random_shift(img, 4)
    assert out.shape == img.shape
    pos = out[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 21 - 10, pos % 21 - 10
    assert set(dy.tolist()) == set(range(-4, 5)) and set(dx.tolist()) == set(range(-4, 5))
    assert (dy != dx).any()  # rows and columns drawn separately
    a, b = random_shift(th.rand(8, 3, 84, 84), 4), random_shift(th.rand(8, 3, 84, 84), 4)
    assert a.shape == b.shape == (8, 3, 84, 84)


# ---------------------------------------------------------------- routing (book ch9, critic-encoder lab)


def small_policy(routing: str) -> th.nn.Module:
    space = push_like_space(image=(6, 24, 24), proprio=4)
    action = gym.spaces.Box(-1, 1, (4,), np.float32)
    kw = {"features_extractor_class": ManipulationExtractor, "features_extractor_kwargs": {"num_filters": 8}}
    if routing == "critic":
        return CriticEncoderMultiInputPolicy(space, action, lambda _: 1e-3, **kw)
    return MultiInputPolicy(space, action, lambda _: 1e-3, share_features_extractor=routing == "actor", **kw)


def batch(policy: th.nn.Module, n: int = 8) -> dict[str, th.Tensor]:
    th.manual_seed(1)
    return {k: th.rand(n, *s.shape) for k, s in policy.observation_space.spaces.items()}


def ids(params: object) -> set[int]:
    return {id(p) for p in params}  # type: ignore[attr-defined]


def opt_ids(opt: th.optim.Optimizer) -> set[int]:
    return {id(p) for g in opt.param_groups for p in g["params"]}


@pytest.mark.parametrize("routing", ["actor", "separate", "critic"])
def test_optimizer_membership(routing: str) -> None:
    pol = small_policy(routing)
    actor_enc = ids(pol.actor.features_extractor.parameters())
    critic_enc = ids(pol.critic.features_extractor.parameters())
    target_enc = ids(pol.critic_target.features_extractor.parameters())
    assert (
        target_enc.isdisjoint(critic_enc)
        and pol.critic_target.features_extractor is not pol.critic.features_extractor
    )
    in_actor, in_critic = opt_ids(pol.actor.optimizer), opt_ids(pol.critic.optimizer)
    if routing == "actor":
        assert pol.actor.features_extractor is pol.critic.features_extractor
        assert actor_enc <= in_actor and actor_enc.isdisjoint(in_critic)
    elif routing == "separate":
        assert pol.actor.features_extractor is not pol.critic.features_extractor
        assert actor_enc <= in_actor and critic_enc <= in_critic
        assert actor_enc.isdisjoint(in_critic) and critic_enc.isdisjoint(in_actor)
    else:
        assert pol.actor.features_extractor is pol.critic.features_extractor
        assert actor_enc.isdisjoint(in_actor) and actor_enc <= in_critic
        assert len(actor_enc) == len(list(pol.actor.features_extractor.parameters())) > 0


def enc_state(module: th.nn.Module) -> list[th.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[th.Tensor], module: th.nn.Module) -> bool:
    return any(not th.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def has_grad(module: th.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def critic_loss(pol: th.nn.Module, obs: dict[str, th.Tensor]) -> th.Tensor:
    acts = th.rand(len(obs["pixels"]), 4) * 2 - 1
    return sum(((q - 1.0) ** 2).mean() for q in pol.critic(obs, acts))


def actor_loss(pol: th.nn.Module, obs: dict[str, th.Tensor]) -> th.Tensor:
    """SAC's policy loss: alpha * log pi - min Q, evaluated through the critic."""
    act, logp = pol.actor.action_log_prob(obs)
    q = th.min(th.cat(pol.critic(obs, act), dim=1), dim=1).values
    return (0.05 * logp - q).mean()


def test_critic_routing_gradients_and_steps() -> None:
    pol = small_policy("critic")
    enc, obs = pol.critic.features_extractor, batch(pol)
    # Critic loss writes encoder grads and the critic step moves the encoder.
    pol.critic.optimizer.zero_grad()
    critic_loss(pol, obs).backward()
    assert has_grad(enc)
    before = enc_state(enc)
    pol.critic.optimizer.step()
    assert changed(before, enc)
    # An actor-only loss (no critic) never reaches the encoder: features are detached.
    pol.critic.optimizer.zero_grad()
    pol.actor.optimizer.zero_grad()
    act, _ = pol.actor.action_log_prob(obs)
    act.pow(2).mean().backward()
    assert not has_grad(enc)
    # The full actor loss goes through the critic: stale encoder grads appear but the actor step ignores them,
    # and the next critic zero_grad clears them.
    pol.actor.optimizer.zero_grad()
    actor_loss(pol, obs).backward()
    assert has_grad(enc)
    before = enc_state(enc)
    pol.actor.optimizer.step()
    assert not changed(before, enc)
    pol.critic.optimizer.zero_grad()
    assert not has_grad(enc)


def test_actor_routing_encoder_learns_from_actor_only() -> None:
    pol = small_policy("actor")
    enc, obs = pol.actor.features_extractor, batch(pol)
    pol.critic.optimizer.zero_grad()
    critic_loss(pol, obs).backward()
    assert not has_grad(enc)  # SB3 computes critic features without gradient when shared
    before = enc_state(enc)
    pol.critic.optimizer.step()
    assert not changed(before, enc)
    pol.actor.optimizer.zero_grad()
    actor_loss(pol, obs).backward()
    assert has_grad(enc)
    pol.actor.optimizer.step()
    assert changed(before, enc)


def test_separate_routing_each_loss_trains_its_own_encoder() -> None:
    pol = small_policy("separate")
    obs = batch(pol)
    a_before, c_before = enc_state(pol.actor.features_extractor), enc_state(pol.critic.features_extractor)
    pol.critic.optimizer.zero_grad()
    critic_loss(pol, obs).backward()
    pol.critic.optimizer.step()
    assert changed(c_before, pol.critic.features_extractor)
    assert not changed(a_before, pol.actor.features_extractor)


def test_target_encoder_is_separate_and_moves_under_polyak() -> None:
    pol = small_policy("critic")
    target = pol.critic_target.features_extractor
    for a, b in zip(pol.critic.features_extractor.parameters(), target.parameters(), strict=True):
        assert th.equal(a, b) and a is not b
    pol.critic.optimizer.zero_grad()
    critic_loss(pol, batch(pol)).backward()
    pol.critic.optimizer.step()
    before = enc_state(target)
    polyak_update(pol.critic.parameters(), pol.critic_target.parameters(), 0.005)
    assert changed(before, target)
    diff = [(a - b).abs().max() for a, b in zip(before, target.parameters(), strict=True)]
    src = [
        (a - b).abs().max() for a, b in zip(pol.critic.features_extractor.parameters(), before, strict=True)
    ]
    assert max(diff) <= 0.0051 * max(src) + 1e-7  # a tau-sized step toward the online encoder


def test_routing_config_errors() -> None:
    from stable_baselines3 import PPO

    with pytest.raises(ConfigError, match="routing must be one of"):
        routing_kwargs("both", SAC)
    with pytest.raises(ConfigError, match="routing=critic"):
        routing_kwargs("critic", PPO)
    assert routing_kwargs(None, SAC) == {}
    assert routing_kwargs("actor", SAC) == {"policy_kwargs": {"share_features_extractor": True}}


class TinyPixelGoalEnv(gym.Env):
    """Random-image goal env, 10-step episodes: SAC integration without MuJoCo rendering."""

    def __init__(self) -> None:
        self.observation_space = push_like_space(image=(6, 24, 24), proprio=4)
        self.action_space = gym.spaces.Box(-1, 1, (4,), np.float32)
        self.t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            k: s.sample() if k == "pixels" else self.np_random.normal(size=s.shape)
            for k, s in self.observation_space.spaces.items()
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.t += 1
        return self._obs(), -1.0, False, self.t >= 10, {"is_success": 0.0}

    def compute_reward(self, achieved: np.ndarray, desired: np.ndarray, info: object) -> np.ndarray:
        return -(np.linalg.norm(achieved - desired, axis=-1) > 0.05).astype(np.float32)


@pytest.mark.slow
def test_critic_routing_trains_saves_and_loads(tmp_path) -> None:  # noqa: ANN001
    from rlexp.components.buffers import PixelHerReplayBuffer

    model = SAC(
        CriticEncoderMultiInputPolicy,
        TinyPixelGoalEnv(),
        learning_starts=20,
        batch_size=8,
        buffer_size=200,
        replay_buffer_class=PixelHerReplayBuffer,
        replay_buffer_kwargs={"frame_stack": 2, "drq_pad": 2},
        policy_kwargs={
            "features_extractor_class": ManipulationExtractor,
            "features_extractor_kwargs": {"num_filters": 8},
        },
        seed=0,
        device="cpu",
    )
    enc = model.policy.critic.features_extractor
    before = enc_state(enc)
    model.learn(40)
    assert changed(before, enc)
    model.save(tmp_path / "m.zip")
    loaded = SAC.load(tmp_path / "m.zip", env=TinyPixelGoalEnv(), device="cpu")
    pol = loaded.policy
    assert type(pol) is CriticEncoderMultiInputPolicy
    assert pol.actor.features_extractor is pol.critic.features_extractor
    assert ids(pol.actor.features_extractor.parameters()).isdisjoint(opt_ids(pol.actor.optimizer))
    assert pol.critic_target.features_extractor is not pol.critic.features_extractor
    obs = {k: v[None] for k, v in TinyPixelGoalEnv().reset(seed=3)[0].items()}
    a0, _ = model.predict(obs, deterministic=True)
    a1, _ = loaded.predict(obs, deterministic=True)
    assert np.abs(a0 - a1).max() < 1e-5


# ---------------------------------------------------------------- augmentation inside batches


def test_augment_batch_touches_only_images() -> None:
    from stable_baselines3.common.type_aliases import DictReplayBufferSamples

    th.manual_seed(0)
    obs = {"pixels": th.randint(0, 255, (16, 6, 24, 24), dtype=th.uint8), "desired_goal": th.rand(16, 3)}
    nxt = {"pixels": obs["pixels"].clone(), "desired_goal": obs["desired_goal"].clone()}
    b = DictReplayBufferSamples(obs, th.rand(16, 4), nxt, th.zeros(16, 1), -th.ones(16, 1))
    out = augment_batch(b, ("pixels",), 4)
    assert out.observations["pixels"].dtype == th.uint8
    assert not th.equal(out.observations["pixels"], out.next_observations["pixels"])  # independent draws
    assert th.equal(out.observations["desired_goal"], obs["desired_goal"])
    assert th.equal(out.actions, b.actions) and th.equal(out.rewards, b.rewards)
