"""fast=true: the same update as plain SB3 SAC+HER on Fetch, with fewer operations.

Fetch observations and HER batches are bitwise those of gymnasium-robotics and SB3; a FastSAC gradient step
equals SAC's within float tolerance (fused Adam rounds differently); checkpoints are interchangeable.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC, HerReplayBuffer
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.sac.policies import Actor, ContinuousCritic, MultiInputPolicy

import rlexp
from rlexp.builder import build
from rlexp.components.envs import register_robotics
from rlexp.config import config_hash
from rlexp.errors import ConfigError
from rlexp.fast import fetch_index
from rlexp.fast.sac import FastSAC
from rlexp.spec import RunSpec

from helpers import HER_TINY, ok, read_json, run_py


@pytest.mark.parametrize("env_id", ["FetchPush-v4", "FetchReach-v4", "FetchPickAndPlace-v4"])
def test_fetch_observations_by_index_are_bitwise_equal(env_id: str) -> None:
    """Same seeds and actions: the same observations, rewards, terminations, infos and simulator state (the
    action and the gripper block applied by index), bit for bit."""
    register_robotics()
    plain, fast = gym.make(env_id), gym.make(env_id)
    assert fetch_index.install(fast)
    base = fast.unwrapped
    assert [type(vars(base)[k]).__name__ for k in ("_get_obs", "_set_action", "_step_callback")] == \
        ["FetchObservation", "FetchAction", "FetchGripperBlock"]
    rng = np.random.default_rng(0)
    for episode in range(2):
        outs = [plain.reset(seed=episode), fast.reset(seed=episode)]
        for _ in range(50):
            assert outs[0][-1] == outs[1][-1]  # infos
            for key, value in outs[0][0].items():
                assert value.dtype == outs[1][0][key].dtype and value.tobytes() == outs[1][0][key].tobytes(), key
            action = rng.uniform(-1, 1, 4).astype(np.float32)
            outs = [plain.step(action), fast.step(action)]
            assert outs[0][1:] == outs[1][1:]  # reward, terminated, truncated, info
            for field in ("qpos", "qvel", "ctrl", "mocap_pos", "mocap_quat"):  # the action applied the same way
                assert getattr(plain.unwrapped.data, field).tobytes() == getattr(base.data, field).tobytes(), field
    assert not fetch_index.install(gym.make("Pendulum-v1"))


def _batch(env: VecEnv, n: int = 64) -> DictReplayBufferSamples:
    g = th.Generator().manual_seed(0)
    space = env.observation_space

    def obs() -> dict[str, th.Tensor]:
        return {k: th.randn((n, *s.shape), generator=g) for k, s in space.spaces.items()}

    return DictReplayBufferSamples(observations=obs(), actions=th.rand((n, 4), generator=g) * 2 - 1,
                                   next_observations=obs(), dones=(th.rand((n, 1), generator=g) < 0.1).float(),
                                   rewards=-(th.rand((n, 1), generator=g) < 0.7).float())


def _train_on(model: SAC, batch: DictReplayBufferSamples, steps: int, start: dict | None = None) -> None:
    """`steps` gradient steps on `batch` every time (from the policy weights `start`, if given), torch seed 7."""
    if start is not None:
        model.policy.load_state_dict(start)
    model.replay_buffer.sample = lambda *a, **k: batch
    model.set_logger(configure(None, []))
    th.manual_seed(7)
    model.train(gradient_steps=steps, batch_size=64)


def _assert_same_update(plain: SAC, fast: SAC) -> None:
    """Losses, parameters, optimizer moments, entropy coefficient and target networks equal within float
    tolerance. Adam's moments are small (second moments ~1e-8 here, squares of gradients): each is compared
    relative to its tensor's largest entry, the second ones by their square roots, what the update divides by."""
    close = dict(rtol=1e-5, atol=1e-6)
    for key in ("train/actor_loss", "train/critic_loss", "train/ent_coef"):
        assert np.isclose(plain.logger.name_to_value[key], fast.logger.name_to_value[key], **close), key
    for (name, p), q in zip(plain.policy.state_dict().items(), fast.policy.state_dict().values(), strict=True):
        assert th.allclose(p, q, **close), name  # actor, critic and critic_target
    for opt_a, opt_b in ((plain.actor.optimizer, fast.actor.optimizer),
                         (plain.critic.optimizer, fast.critic.optimizer)):
        for sa, sb in zip(opt_a.state_dict()["state"].values(), opt_b.state_dict()["state"].values(), strict=True):
            assert th.equal(sa["step"], sb["step"])
            for a, b in ((sa["exp_avg"], sb["exp_avg"]), (sa["exp_avg_sq"].sqrt(), sb["exp_avg_sq"].sqrt())):
                scale = float(a.abs().max())
                assert scale > 1e-7 and th.allclose(a, b, rtol=1e-4, atol=1e-4 * scale)
    if plain.log_ent_coef is not None:
        (sa,), (sb,) = (o.state_dict()["state"].values() for o in (plain.ent_coef_optimizer, fast.ent_coef_optimizer))
        assert all(th.allclose(sa[k], sb[k], rtol=1e-4, atol=0) for k in ("exp_avg", "exp_avg_sq"))
        assert th.allclose(plain.log_ent_coef, fast.log_ent_coef, **close)
        assert np.isclose(plain.logger.name_to_value["train/ent_coef_loss"],
                          fast.logger.name_to_value["train/ent_coef_loss"], **close)


def _twins(classes: tuple[type[SAC], type[SAC]], venv: VecEnv, policy: object = "MultiInputPolicy",
           **kwargs: object) -> list[SAC]:
    """Two models with the same weights and entropy coefficient."""
    kwargs = dict(learning_starts=0, batch_size=64, gamma=0.95, seed=0, policy_kwargs={"net_arch": [64, 64]}, **kwargs)
    models = [cls(policy, venv, **kwargs) for cls in classes]
    models[1].policy.load_state_dict(models[0].policy.state_dict())
    if models[0].log_ent_coef is not None:
        models[1].log_ent_coef.data.copy_(models[0].log_ent_coef.data)
    return models


@pytest.mark.parametrize("ent_coef", ["auto", 0.05])
def test_fast_sac_update_equals_sb3s(ent_coef: str | float) -> None:
    """Same weights, batches and torch seed: losses, parameters, optimizer moments, entropy coefficient and
    target networks after three gradient steps equal SB3's within float tolerance."""
    register_robotics()
    venv = make_vec_env("FetchPush-v4", n_envs=1)
    models = _twins((SAC, FastSAC), venv, ent_coef=ent_coef)
    batch = _batch(venv)
    for model in models:
        _train_on(model, batch, 3)  # the same batch for both, every step
    plain, fast = models
    assert fast.actor.optimizer.param_groups[0]["fused"]  # fused Adam
    saved = fast.get_parameters()["critic.optimizer"]["param_groups"][0]  # ... and checkpoints say plain Adam
    assert saved["fused"] is None and saved["foreach"] is None
    _assert_same_update(plain, fast)
    assert not th.equal(plain.critic_target.state_dict()["qf0.0.weight"],
                        plain.critic.state_dict()["qf0.0.weight"])


class _ScaledActor(Actor):
    """An actor that transforms its features: the critics must still compute their own."""

    def extract_features(self, obs: object, features_extractor: th.nn.Module) -> th.Tensor:
        return super().extract_features(obs, features_extractor) * 2.0


class _ScaledCritic(ContinuousCritic):
    """A critic with its own forward: the update must call it."""

    def forward(self, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        return tuple(0.5 * q for q in super().forward(obs, actions))


class _NetsPolicy(MultiInputPolicy):
    actor_class: type[Actor] = Actor
    critic_class: type[ContinuousCritic] = ContinuousCritic

    def make_actor(self, features_extractor: th.nn.Module | None = None) -> Actor:
        return self.actor_class(**self._update_features_extractor(self.actor_kwargs, features_extractor))

    def make_critic(self, features_extractor: th.nn.Module | None = None) -> ContinuousCritic:
        return self.critic_class(**self._update_features_extractor(self.critic_kwargs, features_extractor))


class _ScaledActorPolicy(_NetsPolicy):
    actor_class = _ScaledActor


class _ScaledCriticPolicy(_NetsPolicy):
    critic_class = _ScaledCritic


class _OwnQValues(FastSAC):
    @staticmethod
    def _q_values(critic: th.nn.Module, obs: object, features: th.Tensor | None,
                  actions: th.Tensor) -> tuple[th.Tensor, ...]:
        return tuple(q - 0.1 * actions.square().sum(1, keepdim=True)
                     for q in FastSAC._q_values(critic, obs, features, actions))


class _OwnLogProb(FastSAC):
    def _action_log_prob(self, obs: object, features: th.Tensor | None) -> tuple[th.Tensor, th.Tensor]:
        actions, log_prob = super()._action_log_prob(obs, features)
        return actions, 0.5 * log_prob


@pytest.mark.parametrize(("cls", "policy"), [
    (FastSAC, _ScaledActorPolicy),
    (FastSAC, _ScaledCriticPolicy),
    (_OwnQValues, "MultiInputPolicy"),
    (_OwnLogProb, "MultiInputPolicy"),
], ids=["actor_extract_features", "critic_forward", "fast_sac_q_values", "fast_sac_action_log_prob"])
def test_a_subclass_changing_the_networks_or_the_update_gets_its_own_update(cls: type[FastSAC],
                                                                            policy: object) -> None:
    """What a subclass overrides is what the update runs: an actor's own features stay the actor's (the critics
    compute theirs), a critic's own forward is called, and a FastSAC subclass's `_q_values` or `_action_log_prob`
    is called (the reference: the same subclass through SB3's module calls)."""
    register_robotics()
    venv = make_vec_env("FetchPush-v4", n_envs=1)
    models = _twins((SAC if cls is FastSAC else cls, cls), venv, policy=policy, ent_coef="auto")
    models[0].shared_features = False  # the reference for a FastSAC subclass: the same class, SB3's module calls
    batch = _batch(venv)
    for model in models:
        _train_on(model, batch, 3)
    fast = models[1]
    if policy == "MultiInputPolicy":  # the subclass's own methods, features still computed once
        assert fast._features_once
    else:  # the networks' own calls
        assert not fast._features_once
    _assert_same_update(*models)


def _halve_critic(model: SAC) -> None:
    """critic.forward replaced on the instance (not the target's: a deep copy made before the patch)."""
    critic = model.critic
    critic.forward = lambda obs, actions: tuple(0.5 * q for q in ContinuousCritic.forward(critic, obs, actions))


def _own_q_values(model: SAC) -> None:
    model._q_values = _OwnQValues._q_values  # the plain function: an instance attribute is not bound


@pytest.mark.parametrize(("patch", "after"), [(_own_q_values, 1), (_halve_critic, 0)],
                         ids=["fast_sac_q_values_after_an_update", "critic_forward"])
def test_a_method_replaced_on_the_instance_is_called(patch: object, after: int) -> None:
    """As for subclasses: `model._q_values = fn` (also between train() calls) and `model.critic.forward = fn`
    (before the first train() call: network methods are read at setup) are what the update runs."""
    register_robotics()
    venv = make_vec_env("FetchPush-v4", n_envs=1)
    models = _twins((FastSAC if after else SAC, FastSAC), venv, ent_coef="auto")
    models[0].shared_features = False
    batch = _batch(venv)
    for model in models:
        if after:
            _train_on(model, batch, after)
        patch(model)
        _train_on(model, batch, 3)
    fast = models[1]
    if not after:
        assert not fast._features_once
    _assert_same_update(*models)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # the hook below: its inputs need no grad
@pytest.mark.parametrize(("policy_kwargs", "ent_coef"), [
    ({"net_arch": [64, 64]}, "auto"),
    ({"net_arch": [32, 32], "n_critics": 3, "share_features_extractor": True}, 0.05),
    ({"net_arch": [32], "activation_fn": th.nn.Tanh}, "auto"),
])
def test_features_once_and_direct_mlps_are_bitwise_sb3s_network_calls(policy_kwargs: dict, ent_coef: str | float,
                                                                       ) -> None:
    """FastSAC's Fetch path (features computed once per batch, MLPs as F.linear + in-place ReLU, the squashed
    Gaussian without distribution objects) gives bitwise the weights, entropy coefficient and Adam states of the
    same FastSAC going through SB3's module calls; training flags are set as SB3 sets them; module hooks still
    run."""
    register_robotics()
    venv = make_vec_env("FetchPush-v4", n_envs=1)
    kwargs = dict(learning_starts=0, batch_size=64, gamma=0.95, ent_coef=ent_coef, seed=0, policy_kwargs=policy_kwargs)
    direct, calls, plain = FastSAC("MultiInputPolicy", venv, **kwargs), FastSAC("MultiInputPolicy", venv, **kwargs), \
        SAC("MultiInputPolicy", venv, **kwargs)
    calls.shared_features = False
    start = {k: v.clone() for k, v in direct.policy.state_dict().items()}
    batch = _batch(venv)
    for model in (direct, calls):
        _train_on(model, batch, 3, start)
    assert direct._features_once and not calls._features_once and direct._actor_features.mode == "dict"
    n_opts = 3 if ent_coef == "auto" else 2
    for (name, p), q in zip(direct.policy.state_dict().items(), calls.policy.state_dict().values(), strict=True):
        assert th.equal(p, q), name
    if ent_coef == "auto":
        assert th.equal(direct.log_ent_coef, calls.log_ent_coef)
    for opt in ("actor.optimizer", "critic.optimizer", "ent_coef_optimizer")[:n_opts]:  # Adam's moments, steps
        states = [direct.get_parameters()[opt]["state"], calls.get_parameters()[opt]["state"]]
        assert states[0].keys() == states[1].keys() and all(
            th.equal(states[0][i][k], states[1][i][k]) for i in states[0] for k in states[0][i]), opt
    for mode in (True, False):
        direct.policy.set_training_mode(mode)
        plain.policy.set_training_mode(mode)
        assert [(n, m.training) for n, m in direct.policy.named_modules()] == \
               [(n, m.training) for n, m in plain.policy.named_modules()]
    assert not direct.critic_target.training  # SB3 keeps the target in eval mode
    seen = []  # forward and backward hooks (rlexp's fault injector arms one) still run: SB3's path for that call
    handles = [direct.critic.register_forward_hook(lambda *_: seen.append("fwd")),
               direct.critic.q_networks[0].register_full_backward_hook(lambda *_: seen.append("bwd"))]
    direct.train(gradient_steps=1, batch_size=64)
    for handle in handles:
        handle.remove()
    assert seen.count("fwd") == 2 and "bwd" in seen  # the critic loss and the actor loss
    plain.replay_buffer.sample = lambda *a, **k: batch
    plain.set_logger(configure(None, []))
    for model in (direct, plain):  # a diverged actor stops the update, as SB3's distribution check stops it
        with th.no_grad():
            model.actor.mu.weight[0, 0] = float("nan")
        with pytest.raises(ValueError):
            model.train(gradient_steps=1, batch_size=64)


def test_direct_acting_gives_sb3s_actions_bitwise() -> None:
    """FastSAC's policy acts (and evaluates) through direct calls: for the same weights, observations and torch
    seed, predict gives SB3's actions bit for bit, stochastic and deterministic, and leaves the torch RNG where
    SB3 leaves it; with a hook on the actor, the call goes through SB3's modules and the hook runs; NaN weights
    raise a ValueError as SB3's do; gSDE keeps SB3's acting."""
    register_robotics()
    venv = make_vec_env("FetchPush-v4", n_envs=4, seed=3)
    fast, plain = (cls("MultiInputPolicy", venv, seed=0, policy_kwargs={"net_arch": [32]}) for cls in (FastSAC, SAC))
    assert "_predict" in vars(fast.policy) and "_predict" not in vars(plain.policy)
    assert "_predict" not in vars(FastSAC("MultiInputPolicy", venv, use_sde=True).policy)
    assert vars(fast.policy)["_predict"].features.mode == "dict"  # Fetch's features as direct tensor calls
    plain.policy.load_state_dict(fast.policy.state_dict())

    def no_module_call(*_: object, **__: object) -> None:
        raise AssertionError("the actor's module call ran")

    fast.actor.forward = no_module_call  # the direct path never calls it
    fast.actor.features_extractor.forward = no_module_call  # nor the Flatten extractor's module call
    obs = venv.reset()
    for step in range(30):
        for deterministic in (False, True):
            outs = []
            for model in (fast, plain):
                th.manual_seed(step)
                outs.append((model.predict(obs, deterministic=deterministic)[0], th.rand(1)))
            assert outs[0][0].tobytes() == outs[1][0].tobytes() and th.equal(outs[0][1], outs[1][1])
        obs = venv.step(outs[0][0])[0]
    del fast.actor.forward, fast.actor.features_extractor.forward
    seen = []
    handle = fast.actor.latent_pi.register_forward_hook(lambda *_: seen.append(1))
    fast.predict(obs)
    handle.remove()
    assert seen == [1]
    for model in (fast, plain):
        with th.no_grad():
            model.actor.mu.weight[0, 0] = float("nan")
        with pytest.raises(ValueError):
            model.predict(obs)


def test_a_policy_with_its_own_set_training_mode_keeps_it() -> None:
    """FastSAC's flat set_training_mode stands in for SB3's only: a policy (or network) with its own is called."""

    class EvalActorPolicy(MultiInputPolicy):
        def set_training_mode(self, mode: bool) -> None:
            super().set_training_mode(mode)
            self.actor.set_training_mode(False)  # e.g. dropout in the actor kept off

    register_robotics()
    venv = make_vec_env("FetchReach-v4", n_envs=1)
    model = FastSAC(EvalActorPolicy, venv, policy_kwargs={"net_arch": [8]})
    model.policy.set_training_mode(True)
    assert model.policy.critic.training and not model.policy.actor.training
    assert "set_training_mode" in vars(FastSAC("MultiInputPolicy", venv, policy_kwargs={"net_arch": [8]}).policy)


def test_an_actor_with_its_own_extract_features_keeps_it_on_the_direct_path() -> None:
    """A subclass may change how an actor extracts features (rlexp's DetachedEncoderActor does): the direct path
    calls it, so acting gives SB3's actions bitwise."""
    from stable_baselines3.sac.policies import Actor, MultiInputPolicy

    class ScaledActor(Actor):
        def extract_features(self, obs: object, features_extractor: th.nn.Module) -> th.Tensor:
            return super().extract_features(obs, features_extractor) * 2.0

    class Policy(MultiInputPolicy):
        def make_actor(self, features_extractor: th.nn.Module | None = None) -> Actor:
            kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
            return ScaledActor(**kwargs).to(self.device)

    register_robotics()
    venv = make_vec_env("FetchPush-v4", n_envs=2, seed=1)
    fast, plain = FastSAC(Policy, venv, seed=0), SAC(Policy, venv, seed=0)
    plain.policy.load_state_dict(fast.policy.state_dict())
    assert vars(fast.policy)["_predict"].features.mode == "sb3"
    obs = venv.reset()
    for deterministic in (True, False):
        th.manual_seed(0)
        a = fast.predict(obs, deterministic=deterministic)[0]
        th.manual_seed(0)
        assert a.tobytes() == plain.predict(obs, deterministic=deterministic)[0].tobytes()


def test_fast_sac_saved_and_loaded_by_sb3_keeps_updating_its_own_networks(tmp_path: Path) -> None:
    """SB3's own save/load (and a deep copy or pickle of the policy) get FastSAC's state made for the new
    networks, not stale copies of the old ones: the loaded model's target moves and its hooks run."""
    import copy
    import pickle

    register_robotics()
    venv = make_vec_env("FetchReach-v4", n_envs=1)
    model = FastSAC("MultiInputPolicy", venv, learning_starts=0, batch_size=16, policy_kwargs={"net_arch": [8]})
    model.learn(40)
    model.save(tmp_path / "m.zip")
    loaded = FastSAC.load(tmp_path / "m.zip", env=venv)
    target = [p.clone() for p in loaded.critic_target.parameters()]
    seen = []
    handle = loaded.critic.register_forward_hook(lambda *_: seen.append(1))
    loaded.learn(20, reset_num_timesteps=False)
    handle.remove()
    assert seen and any(not th.equal(a, b) for a, b in zip(target, loaded.critic_target.parameters(), strict=True))
    clone = copy.deepcopy(loaded.policy)
    clone.set_training_mode(True)
    loaded.policy.set_training_mode(False)
    assert clone.actor.training and not loaded.policy.actor.training
    assert pickle.loads(pickle.dumps(loaded.policy)).critic.q_networks


def test_fast_is_a_run_only_key_and_swaps_classes_at_build() -> None:
    cfg = rlexp.compose(*HER_TINY, "fast=true")
    off = rlexp.compose(*HER_TINY)
    assert cfg.fast is True and off.fast is False and config_hash(cfg) == config_hash(off)
    assert cfg.algo._target_ == "stable_baselines3.SAC"  # the recorded config names SB3's classes
    fast_model, plain_model = build(cfg), build(off)
    try:
        assert type(fast_model) is FastSAC and type(fast_model.replay_buffer) is HerReplayBuffer
        assert type(plain_model) is SAC and type(plain_model.replay_buffer) is HerReplayBuffer
        assert isinstance(fast_model.get_env().envs[0].unwrapped._get_obs, fetch_index.FetchObservation)
        # checkpoints hold the same arrays, env attributes and optimizer layout either way
        from rlexp.training.replay_io import buffer_arrays
        from rlexp.training.run_state import Arrays, env_state

        arrays = [sorted(buffer_arrays(m.replay_buffer)[0]) for m in (fast_model, plain_model)]
        assert arrays[0] == arrays[1]
        states = [env_state(m.get_env().envs[0], Arrays()) for m in (fast_model, plain_model)]
        assert [sorted(layer["attrs"]) for layer in states[0]["layers"]] == \
               [sorted(layer["attrs"]) for layer in states[1]["layers"]]
        assert fast_model.get_parameters().keys() == plain_model.get_parameters().keys()
    finally:
        fast_model.get_env().close()
        plain_model.get_env().close()
    with pytest.raises(ConfigError, match="fast must be true or false"):
        RunSpec.of(rlexp.compose(*HER_TINY, "fast=maybe"))


@pytest.mark.slow
def test_a_checkpoint_written_fast_resumes_with_plain_sb3(tmp_path: Path) -> None:
    """Checkpoints are interchangeable: a fast run's step-200 checkpoint continues under fast=false."""
    run, fork = tmp_path / "run", tmp_path / "fork"
    ok(run_py(*HER_TINY, "total_steps=400", "fast=true", f"hydra.run.dir={run}"))
    ok(run_py(f"resume={run}/checkpoints/step_200.zip", "total_steps=400", "fast=false", "progress=false",
              f"hydra.run.dir={fork}"))
    assert "FastSAC + HerReplayBuffer" in (run / "run.log").read_text()
    assert read_json(run / "model.meta.json")["ran"]["algo"] == "rlexp.fast.sac.FastSAC"
    assert read_json(fork / "model.meta.json")["ran"] == {
        "algo": "stable_baselines3.sac.sac.SAC", "fetch_by_index": False, "overlap": False,
        "replay_buffer": "stable_baselines3.her.her_replay_buffer.HerReplayBuffer"}
    assert "SAC + HerReplayBuffer" in (fork / "run.log").read_text() and read_json(fork / "eval.json")["aggregate"]
