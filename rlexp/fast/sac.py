"""SAC with a leaner gradient step: the same update as stable-baselines3's SAC.train, fewer wasted operations.

What differs from `stable_baselines3.SAC.train`, and why each keeps the update rule:
- Adam runs as one fused kernel per network (SB3's `optimizer_kwargs=dict(fused=True)`) instead of the default
  per-tensor loop: the same Adam arithmetic, rounded differently (equal within float tolerance).
- The actor loss computes no gradients for critic weights the actor's optimizer does not own. SB3 computes
  them and discards them (the critic optimizer's `zero_grad` runs before they are ever read).
- Losses stay tensors until the end of `train()`: one host sync per call for every logged value.
- Where the observation features have no weights (Fetch's dict observations: SB3's CombinedExtractor of
  Flatten layers, or FlattenExtractor), a batch's features are computed once for obs and once for next_obs
  and fed to the actor's and critics' layers; SB3 recomputes the same tensors in each of its five network
  calls. The MLPs (plain Sequentials of Linear and ReLU) run as F.linear and in-place ReLU without module-call
  overhead, and the actor's squashed Gaussian as the same tensor operations as torch.distributions' Normal and
  SB3's tanh correction without building distribution objects (whose argument checks cost a host sync each):
  bitwise the same values, gradients and random draws. Networks with weights in their extractor (pixels),
  gSDE, an actor or critic with its own forward, and any call with module hooks on the networks take SB3's
  module calls, so what they override and hooks run (private API: `hooked`, listed in docs/architecture.md).
- `policy.set_training_mode`, called three times per env step, sets the same `training` flags on the same
  modules from a list made once instead of recursing through nn.Module.train.
Random draws happen in the same order, so for the same weights, batch and torch seed the losses, parameters,
optimizer states and target networks equal SB3's within float tolerance (tests/test_fast_path.py). Optimizer
state dicts keep SB3's layout: checkpoints load either way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor, ContinuousCritic, SACPolicy
from torch.nn import functional as F  # noqa: N812 - as SB3 writes it
from torch.nn.modules import module as _torch_module


def fused_adam_available(device: th.device) -> bool:
    """Fused Adam exists for CPU (torch >= 2.4) and CUDA; elsewhere (mps, ...) keep the foreach loop."""
    return device.type in ("cpu", "cuda")


def _mlp(net: th.nn.Module, x: th.Tensor) -> th.Tensor:
    """net(x) for a Sequential of Linear and ReLU layers without module-call overhead; ReLU in place on the
    Linear's fresh output (same values and gradients: addmm's backward does not read its output)."""
    if type(net) is not th.nn.Sequential:  # a subclass may have its own forward
        return net(x)
    fresh = False  # x is a Linear's output this function made: never the caller's input, read by no backward
    for layer in net:
        if type(layer) is th.nn.Linear:
            x, fresh = F.linear(x, layer.weight, layer.bias), True
        elif type(layer) is th.nn.ReLU and fresh:
            x, fresh = th.relu_(x), False  # ReLU's backward reads its output: a second in-place op may not
        else:
            x, fresh = layer(x), False
    return x


def _linear(layer: th.nn.Module, x: th.Tensor) -> th.Tensor:
    """layer(x), as F.linear when the layer is a plain nn.Linear."""
    return F.linear(x, layer.weight, layer.bias) if type(layer) is th.nn.Linear else layer(x)


def _plain_box(space: spaces.Space) -> bool:
    """A Box SB3's preprocess_obs only casts to float (no image scaling)."""
    return isinstance(space, spaces.Box) and not is_image_space(space)


def _inherited(obj: object, base: type, *names: str) -> bool:
    """`obj` (a class or an instance) runs `base`'s own methods `names`: a subclass overriding one, or one
    replaced on the instance (`critic.forward = fn`), must have it called."""
    cls, own = (obj, {}) if isinstance(obj, type) else (type(obj), vars(obj))
    return all(getattr(cls, name) is getattr(base, name) and name not in own for name in names)


class Features:
    """`net.extract_features(obs, net.features_extractor)` as direct tensor calls where the extractor is SB3's Flatten
    layers over plain Box observations: preprocess_obs is `.float()` there and each layer `flatten(1)`, so the same
    ops in the same order give the same tensor. Any other extractor, and a net with its own extract_features, keeps
    SB3's calls (mode "sb3"). An object, not a closure: it pickles, and a deep copy follows the net."""

    def __init__(self, net: th.nn.Module) -> None:
        self.net, self.mode, self.keys = net, "sb3", []
        extractor, space = net.features_extractor, net.observation_space
        if not _inherited(net, BaseModel, "extract_features"):
            return
        if type(extractor) is CombinedExtractor and isinstance(space, spaces.Dict) and all(
                self._flatten(layer) and _plain_box(space[key]) for key, layer in extractor.extractors.items()):
            self.mode, self.keys = "dict", list(extractor.extractors)
        elif type(extractor) is FlattenExtractor and self._flatten(extractor.flatten) and _plain_box(space):
            self.mode = "flat"

    @staticmethod
    def _flatten(layer: th.nn.Module) -> bool:
        return type(layer) is th.nn.Flatten and layer.start_dim == 1 and layer.end_dim == -1

    def __call__(self, obs: Any) -> th.Tensor:
        if self.mode == "dict":
            return th.cat([obs[key].float().flatten(1) for key in self.keys], dim=1)
        if self.mode == "flat":
            return obs.float().flatten(1)
        return self.net.extract_features(obs, self.net.features_extractor)


_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def squashed_gaussian(mean: th.Tensor, log_std: th.Tensor, epsilon: float, deterministic: bool = False,
                      log_prob: bool = True) -> tuple[th.Tensor, th.Tensor | None]:
    """SB3's SquashedDiagGaussianDistribution sample (tanh of a reparametrised Normal draw) and its log-prob,
    without torch.distributions objects: the same operations in the same order as
    Normal(mean, ones_like(mean) * exp(log_std)).rsample() / .log_prob() and SB3's tanh correction."""
    std = th.ones_like(mean) * log_std.exp()
    mean, std = th.broadcast_tensors(mean, std)  # as Normal stores them: the same autograd graph
    if deterministic:
        return th.tanh(mean), None
    noise = th.empty(mean.shape, dtype=mean.dtype, device=mean.device).normal_()
    gaussian = mean + noise * std
    actions = th.tanh(gaussian)
    if not log_prob:
        return actions, None
    logp = (-((gaussian - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI).sum(dim=1)
    logp -= th.sum(th.log(1 - actions**2 + epsilon), dim=1)
    return actions, logp


def _direct_actor(actor: th.nn.Module) -> bool:
    """The actor can run as direct calls: SB3's own Actor methods, weightless dict/flat features, a squashed
    Gaussian, no gSDE."""
    return (isinstance(actor, Actor) and _inherited(actor, Actor, "forward", "get_action_dist_params",
                                                    "action_log_prob")
            and type(actor.features_extractor) in (CombinedExtractor, FlattenExtractor)
            and not list(actor.features_extractor.parameters()) and not actor.use_sde
            and type(actor.action_dist) is SquashedDiagGaussianDistribution)


# Private API (docs/architecture.md, "Private APIs"; tests/test_private_api.py): torch keeps global module hooks in
# these dicts and per-module ones in `_forward_hooks` etc.; there is no public "has hooks" query. Direct calls
# would skip a hook, so a call with any hook takes the module calls.
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def hooked(modules: list[th.nn.Module]) -> bool:
    """Module hooks anywhere (a user's): direct calls would skip them."""
    return any(getattr(_torch_module, name) for name in _GLOBAL_HOOKS) or any(
        getattr(m, name) for m in modules for name in _MODULE_HOOKS)


class DirectActing:
    """An SB3 SAC policy's `_predict` (acting and evaluation) through direct calls where the actor allows them,
    SB3's module calls otherwise: the same actions bitwise, the same random draw."""

    def __init__(self, policy: th.nn.Module) -> None:
        self.policy = policy
        self.modules = list(policy.actor.modules())
        self.features = Features(policy.actor)

    def __call__(self, observation: Any, deterministic: bool = False) -> th.Tensor:
        actor = self.policy.actor
        if hooked(self.modules):
            return type(self.policy)._predict(self.policy, observation, deterministic)
        latent_pi = _mlp(actor.latent_pi, self.features(observation))
        mean_actions = _linear(actor.mu, latent_pi)
        log_std = th.clamp(_linear(actor.log_std, latent_pi), LOG_STD_MIN, LOG_STD_MAX)
        actions = squashed_gaussian(mean_actions, log_std, actor.action_dist.epsilon, deterministic, log_prob=False)[0]
        if th.isnan(actions).any():  # where torch.distributions' argument check raises for SB3
            raise ValueError("the actor's action distribution has NaN parameters (the weights diverged)")
        return actions

    @classmethod
    def install(cls, policy: th.nn.Module) -> None:
        if _direct_actor(policy.actor) and type(policy)._predict is SACPolicy._predict:
            policy._predict = cls(policy)


class FlatTrainingMode:
    """An SB3 SAC policy's set_training_mode with SB3's effect (actor, critic and the policy; the target stays in
    eval mode) and none of nn.Module.train's recursion. An object, not a closure: a deep copy of the policy gets
    one over its own modules, and the policy still pickles."""

    def __init__(self, policy: th.nn.Module) -> None:
        nets = [policy.actor, policy.critic]
        self.modules = list({id(m): m for net in nets for m in net.modules()}.values()) + [policy]

    def __call__(self, mode: bool) -> None:
        for module in self.modules:
            module.training = mode

    @classmethod
    def install(cls, policy: th.nn.Module) -> None:
        flat = cls(policy)
        sb3s = _inherited(policy, SACPolicy, "set_training_mode") and all(
            _inherited(net, BaseModel, "set_training_mode") for net in (policy.actor, policy.critic))
        if sb3s and all(_inherited(m, th.nn.Module, "train") for m in flat.modules):  # else one has its own
            policy.set_training_mode = flat


class FastSAC(SAC):
    """stable_baselines3.SAC whose `train()` does the same update with fewer operations (module docstring)."""

    _critic_own: list[th.Tensor] | None = None  # None: _fast_setup has not run for this model's networks
    # Each speed-up on its own switch, for bench/throughput.py --candidates (all on by default)
    fused_adam = True
    skip_critic_grads = True
    shared_features = True

    def _setup_model(self) -> None:
        if self.fused_adam and fused_adam_available(th.device(self.device)):
            opt = dict(self.policy_kwargs.get("optimizer_kwargs") or {})
            if "fused" not in opt and "foreach" not in opt:  # a user's choice stands
                self.policy_kwargs = {**self.policy_kwargs, "optimizer_kwargs": {**opt, "fused": True}}
        super()._setup_model()
        FlatTrainingMode.install(self.policy)
        if self.shared_features:
            DirectActing.install(self.policy)
        self._critic_own = None

    def _excluded_save_params(self) -> list[str]:
        """SB3 pickles every other attribute into the zip: these lists would be stale copies of the networks."""
        return [*super()._excluded_save_params(), "_critic_own", "_net_modules", "_features_once", "_actor_features"]

    def _fused_groups(self) -> list[dict[str, Any]]:
        if self.policy_kwargs.get("optimizer_kwargs", {}).get("fused") is not True:
            return []
        return [g for opt in (self.actor.optimizer, self.critic.optimizer) for g in opt.param_groups]

    def get_parameters(self) -> dict[str, dict]:
        """SB3's state dicts with SB3's optimizer flags: a checkpoint runs plain Adam under fast=false."""
        params = super().get_parameters()
        if self._fused_groups():
            for name in ("actor.optimizer", "critic.optimizer"):
                for group in params.get(name, {}).get("param_groups", ()):
                    group["fused"] = None  # th.optim.Adam's default, as SB3 builds it
        return params

    def set_parameters(self, *args: Any, **kwargs: Any) -> None:
        """A loaded optimizer state brings SB3's flags back: fused again, as this model was built."""
        super().set_parameters(*args, **kwargs)
        for group in self._fused_groups():
            group["fused"], group["foreach"] = True, None

    def _fast_setup(self) -> None:
        actor_owned = {id(p) for g in self.actor.optimizer.param_groups for p in g["params"]}
        # The critic's own weights; which of them are trained (requires_grad) is read on every train() call
        self._critic_own = [p for p in self.critic.parameters() if id(p) not in actor_owned]
        nets = (self.actor, self.critic, self.critic_target)
        self._actor_features = feats = Features(self.actor)
        # One features tensor for all three networks where each computes it with SB3's weightless Flatten layers
        # in the same order, and the critics are SB3's ContinuousCritic calls.
        self._features_once = self.shared_features and _direct_actor(self.actor) and feats.mode != "sb3" and all(
            _inherited(n, ContinuousCritic, "forward") and (f := Features(n)).mode == feats.mode
            and f.keys == feats.keys for n in nets[1:])
        self._net_modules = [m for n in nets for m in n.modules()]

    def _action_log_prob(self, obs: object, features: th.Tensor | None) -> tuple[th.Tensor, th.Tensor]:
        """actor.action_log_prob(obs), from precomputed features when there are some (no gSDE there)."""
        if features is None:
            return self.actor.action_log_prob(obs)
        actor = self.actor
        latent_pi = _mlp(actor.latent_pi, features)
        mean_actions = _linear(actor.mu, latent_pi)
        log_std = th.clamp(_linear(actor.log_std, latent_pi), LOG_STD_MIN, LOG_STD_MAX)
        return squashed_gaussian(mean_actions, log_std, actor.action_dist.epsilon)  # type: ignore[return-value]

    @staticmethod
    def _q_values(critic: th.nn.Module, obs: object, features: th.Tensor | None,
                  actions: th.Tensor) -> tuple[th.Tensor, ...]:
        """critic(obs, actions), from precomputed features when there are some."""
        if features is None:
            return critic(obs, actions)
        qvalue_input = th.cat([features, actions], dim=1)
        return tuple(_mlp(q_net, qvalue_input) for q_net in critic.q_networks)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """SB3's SAC.train, step for step (same order of random draws and optimizer steps)."""
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers += [self.ent_coef_optimizer]
        self._update_learning_rate(optimizers)
        if self._critic_own is None:
            self._fast_setup()
        critic_only = [p for p in self._critic_own if p.requires_grad] if self.skip_critic_grads else []
        direct = self._features_once and not hooked(self._net_modules)
        features_of = self._actor_features if direct else (lambda obs: None)

        ent_coef_losses, ent_coefs, actor_losses, critic_losses = [], [], [], []
        for gradient_step in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            if self.use_sde:
                self.actor.reset_noise()
            obs, next_obs = replay_data.observations, replay_data.next_observations
            features, next_features = features_of(obs), features_of(next_obs)
            actions_pi, log_prob = self._action_log_prob(obs, features)
            log_prob = log_prob.reshape(-1, 1)

            ent_coef_loss = None
            if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                ent_coef = th.exp(self.log_ent_coef.detach())
                assert isinstance(self.target_entropy, float)
                ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
                ent_coef_losses.append(ent_coef_loss.detach())
            else:
                ent_coef = self.ent_coef_tensor
            ent_coefs.append(ent_coef.detach())
            if ent_coef_loss is not None and self.ent_coef_optimizer is not None:
                self.ent_coef_optimizer.zero_grad()
                ent_coef_loss.backward()
                self.ent_coef_optimizer.step()

            with th.no_grad():
                next_actions, next_log_prob = self._action_log_prob(next_obs, next_features)
                next_q_values = th.cat(self._q_values(self.critic_target, next_obs, next_features, next_actions), dim=1)
                next_q_values, _ = th.min(next_q_values, dim=1, keepdim=True)
                next_q_values = next_q_values - ent_coef * next_log_prob.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

            current_q_values = self._q_values(self.critic, obs, features, replay_data.actions)
            critic_loss = 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
            assert isinstance(critic_loss, th.Tensor)
            critic_losses.append(critic_loss.detach())
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            # Actor loss: gradients reach the actions (and any weights the actor's optimizer owns), not the
            # critic's own weights, whose gradients SB3 computes only to discard them.
            for p in critic_only:
                p.requires_grad_(False)
            try:
                q_values_pi = th.cat(self._q_values(self.critic, obs, features, actions_pi), dim=1)
                min_qf_pi, _ = th.min(q_values_pi, dim=1, keepdim=True)
                actor_loss = (ent_coef * log_prob - min_qf_pi).mean()
                actor_losses.append(actor_loss.detach())
                self.actor.optimizer.zero_grad()
                actor_loss.backward()
            finally:
                for p in critic_only:
                    p.requires_grad_(True)
            self.actor.optimizer.step()

            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

        self._n_updates += gradient_steps
        self._log_means(ent_coefs, actor_losses, critic_losses, ent_coef_losses, direct)

    def _log_means(self, ent_coefs: list[th.Tensor], actor_losses: list[th.Tensor], critic_losses: list[th.Tensor],
                   ent_coef_losses: list[th.Tensor], direct: bool) -> None:
        """One host sync for every logged value: SB3's np.mean of each list, as float64 means over one array."""
        series = {"ent_coef": ent_coefs, "actor_loss": actor_losses, "critic_loss": critic_losses,
                  "ent_coef_loss": ent_coef_losses}
        flat = th.cat([v.reshape(-1) for values in series.values() for v in values]).float().cpu().numpy()
        flat = flat.astype(np.float64)
        means, at = {}, 0
        for key, values in series.items():
            if values:
                means[key] = float(np.mean(flat[at:at + len(values)]))
            at += len(values)
        if direct and any(math.isnan(means[key]) for key in ("ent_coef", "actor_loss", "critic_loss")):
            raise ValueError(f"FastSAC: NaN in the gradient step ({means}) at update {self._n_updates}: the run "
                             "diverged (SB3's torch.distributions argument check stops it at the same point)")
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, value in means.items():  # SB3's order; ent_coef_loss only with ent_coef=auto
            self.logger.record(f"train/{key}", value)
