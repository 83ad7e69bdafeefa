"""SAC with a leaner gradient step: the same update as stable-baselines3's SAC.train, fewer wasted operations.

What differs from `stable_baselines3.SAC.train`, and why each keeps the update rule:
- Adam runs as one fused (CPU/CUDA) kernel over all of a network's tensors instead of SB3's default
  per-tensor loop: the same Adam arithmetic, rounded differently (equal within float tolerance).
- The actor loss does not compute gradients for critic weights the actor's optimizer does not own. SB3
  computes them and discards them (the critic optimizer's `zero_grad` runs before they are ever read);
  the actor's own gradients are unchanged.
- Polyak averaging is two `torch._foreach_*` calls over all target tensors: the same `mul_(1 - tau)` then
  `add(alpha=tau)` as `stable_baselines3.common.utils.polyak_update`, bitwise.
- Losses stay tensors until the end of `train()`: one host sync per call for every logged value, instead of
  three per step.
- Where the observation features have no weights (Fetch's dict observations: SB3's CombinedExtractor of
  Flatten layers, or FlattenExtractor), a batch's features are computed once for obs and once for next_obs
  and fed to the actor's and critics' layers; SB3 recomputes the same tensors in each of its five network
  calls. Same values, same layers, same order. The features themselves (SB3's preprocess_obs cast and Flatten
  layers, `Features`) are the same tensor calls without the module and preprocessing wrappers, here and when
  acting. On that path the MLPs (plain Sequentials of Linear and ReLU)
  run as F.linear and in-place ReLU on the Linear's fresh output, without nn.Module call overhead: the same
  kernels, bitwise the same values and gradients. Networks with weights in their extractor (pixels), gSDE,
  an actor that transforms its features, a critic with its own forward (a subclass's, or one set on the
  instance before the first train() call: network methods are read once, at setup), and any train() call
  with module hooks on the networks (rlexp's fault injector, a user's) take SB3's module calls, so what they
  override and hooks run.
- `policy.set_training_mode`, called three times per env step, sets the same `training` flags on the same
  modules (actor and critic, not the target, as SB3 does) from a list made once, instead of recursing
  through nn.Module.train.
- On the same path the actor's squashed Gaussian (its sample and log-prob in the update; its action when the
  policy acts or is evaluated, `DirectActing`) is the same tensor operations in the same order as
  torch.distributions.Normal and SB3's tanh correction, without building distribution objects: bitwise the
  same values, gradients and random draw. Their argument checks (a host sync each) are what is skipped: a
  diverged run (NaN weights) raises a ValueError from the update's losses or the action instead.
- Fused Adam is called as `torch._fused_adam_` directly, the call Adam.step makes, without Optimizer.step's
  Python wrapper (three optimizers per gradient step with ent_coef=auto): bitwise the same update. Anything the
  direct call does not cover (first step, hooks, a wrapped step, other options) goes through Adam.step.
- On the same path, where the actor and critics are plain Linear/ReLU MLPs (SB3's default networks), the
  critic and actor losses' gradients are written out (sac_grads) instead of recorded by autograd: the same
  matrix kernels without the graph, and without the critics' input gradient for the observation columns,
  which the actor loss never reads. The critics' gradients are autograd's bitwise; the actor's equal them
  within float tolerance (autograd adds and subtracts two log-prob terms that cancel exactly on paper). A
  FastSAC subclass that overrides `_q_values`, `_action_log_prob` or `_critic_and_actor_steps`, or a model with
  one replaced on the instance (read on every train() call), gets autograd through its own methods.
Random draws (the actor's samples) happen in the same order, so for the same weights, batch and torch
seed the losses, parameters, optimizer states and target networks equal SB3's within float tolerance
(tests/test_fast_path.py). Optimizer state dicts keep SB3's layout: checkpoints load either way.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

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
from torch.nn.modules.module import (
    _global_backward_hooks,
    _global_backward_pre_hooks,
    _global_forward_hooks,
    _global_forward_pre_hooks,
)
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from rlexp.components import sac_grads


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


class Features:
    """`net.extract_features(obs, net.features_extractor)` as direct tensor calls where the extractor is SB3's Flatten
    layers over plain Box observations: preprocess_obs is `.float()` there and each layer `flatten(1)`, so the same
    ops in the same order give the same tensor (for Fetch: the cat of achieved_goal, desired_goal, observation).
    Any other extractor, and a net with its own extract_features, keeps SB3's calls. An object, not a closure: it
    pickles, and a deep copy follows the net."""

    def __init__(self, net: th.nn.Module) -> None:
        self.net, self.mode, self.keys = net, "sb3", []
        extractor, space = net.features_extractor, net.observation_space
        if not _inherited(net, BaseModel, "extract_features"):  # e.g. a subclass that transforms them
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


def _squashed_gaussian(mean: th.Tensor, log_std: th.Tensor, epsilon: float,
                       deterministic: bool = False, log_prob: bool = True) -> tuple[th.Tensor, th.Tensor | None]:
    """SB3's SquashedDiagGaussianDistribution sample (tanh of a reparametrised Normal draw) and its log-prob,
    without building torch.distributions objects (their argument checks cost a host sync each). The same
    operations in the same order as Normal(mean, ones_like(mean) * exp(log_std)).rsample() / .log_prob() and
    SB3's tanh correction, so values, gradients and the random draw are bitwise SB3's."""
    actions, logp, _, _ = _squashed_gaussian_parts(mean, log_std, epsilon, deterministic, log_prob)
    return actions, logp


def _squashed_gaussian_parts(mean: th.Tensor, log_std: th.Tensor, epsilon: float, deterministic: bool = False,
                             log_prob: bool = True) -> tuple[th.Tensor, th.Tensor | None, th.Tensor | None, th.Tensor]:
    """`_squashed_gaussian`, also returning the noise (None when deterministic) and the std (what its backward
    reads, sac_grads)."""
    std = th.ones_like(mean) * log_std.exp()
    mean, std = th.broadcast_tensors(mean, std)  # as Normal stores them: the same autograd graph
    if deterministic:
        return th.tanh(mean), None, None, std
    noise = th.empty(mean.shape, dtype=mean.dtype, device=mean.device).normal_()
    gaussian = mean + noise * std
    actions = th.tanh(gaussian)
    if not log_prob:
        return actions, None, noise, std
    var = std**2
    log_scale = std.log()
    logp = (-((gaussian - mean) ** 2) / (2 * var) - log_scale - _LOG_SQRT_2PI).sum(dim=1)
    logp -= th.sum(th.log(1 - actions**2 + epsilon), dim=1)
    return actions, logp, noise, std


def _inherited(obj: object, base: type, *names: str) -> bool:
    """`obj` (a class or an instance) runs `base`'s own methods `names`: a subclass overriding one, or one
    replaced on the instance (`model._q_values = fn`, `critic.forward = fn`), must have it called."""
    cls, own = (obj, {}) if isinstance(obj, type) else (type(obj), vars(obj))
    return all(getattr(cls, name) is getattr(base, name) and name not in own for name in names)


def _direct_actor(actor: th.nn.Module) -> bool:
    """The actor's path can run as direct calls: SB3's own Actor methods (a subclass may only change how features
    are extracted, which the direct path calls), weightless dict/flat features, a squashed Gaussian, no gSDE."""
    return (isinstance(actor, Actor) and _inherited(actor, Actor, "forward", "get_action_dist_params",
                                                    "action_log_prob")
            and type(actor.features_extractor) in (CombinedExtractor, FlattenExtractor)
            and not list(actor.features_extractor.parameters()) and not actor.use_sde
            and type(actor.action_dist) is SquashedDiagGaussianDistribution)


def _hooks(modules: list[th.nn.Module]) -> bool:
    """Module hooks anywhere (a user's, rlexp's fault injector's): direct calls would skip them."""
    return bool(_global_forward_hooks or _global_forward_pre_hooks or _global_backward_hooks
                or _global_backward_pre_hooks) or any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks for m in modules)


class DirectActing:
    """An SB3 SAC policy's `_predict` (used by `predict`: acting and evaluation) through direct calls where the
    actor allows them (`_direct_actor`, no hooks), SB3's module calls otherwise: the same actions bitwise, the
    same random draw. An object, not a closure, for the same reasons as FlatTrainingMode."""

    def __init__(self, policy: th.nn.Module) -> None:
        self.policy = policy
        self.modules = list(policy.actor.modules())
        self.features = Features(policy.actor)

    def __call__(self, observation: Any, deterministic: bool = False) -> th.Tensor:
        actor = self.policy.actor
        if _hooks(self.modules):
            return type(self.policy)._predict(self.policy, observation, deterministic)
        latent_pi = _mlp(actor.latent_pi, self.features(observation))
        mean_actions = _linear(actor.mu, latent_pi)
        log_std = th.clamp(_linear(actor.log_std, latent_pi), LOG_STD_MIN, LOG_STD_MAX)
        actions = _squashed_gaussian(mean_actions, log_std, actor.action_dist.epsilon, deterministic, log_prob=False)[0]
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
            module.__dict__["training"] = mode  # what nn.Module.train sets, without __setattr__'s checks

    @classmethod
    def install(cls, policy: th.nn.Module) -> None:
        flat = cls(policy)
        sb3s = _inherited(policy, SACPolicy, "set_training_mode") and all(
            _inherited(net, BaseModel, "set_training_mode") for net in (policy.actor, policy.critic))
        if sb3s and all(_inherited(m, th.nn.Module, "train") for m in flat.modules):  # else one has its own
            policy.set_training_mode = flat


def _direct_adam_step(opt: th.optim.Optimizer) -> bool:
    """`opt.step()` for a fused Adam whose state exists: the kernel call Adam.step makes (steps += 1, then
    `torch._fused_adam_` over the same lists with the same hyperparameters), without Optimizer.step's Python
    wrapper (profiler records, dynamo guards, lazy-state checks: ~0.1-0.2 ms per call, three calls per gradient
    step). Bitwise the same update. False (nothing done) where Adam.step must run: another optimizer, options
    this call does not cover, hooks, a parameter without a gradient or without state yet (the first step)."""
    if type(opt) is not th.optim.Adam or len(opt.param_groups) != 1 or opt._optimizer_step_pre_hooks \
            or opt._optimizer_step_post_hooks or _global_optimizer_pre_hooks or _global_optimizer_post_hooks \
            or "step" in vars(opt) or getattr(opt, "grad_scale", None) is not None:  # a wrapped step, a GradScaler
        return False
    group = opt.param_groups[0]
    if not group["fused"] or group["amsgrad"] or group["maximize"] or group["capturable"] \
            or group["differentiable"] or group["decoupled_weight_decay"] or th.is_tensor(group["lr"]):
        return False
    params = group["params"]
    grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
    for param in params:
        state = opt.state.get(param)
        if param.grad is None or not state or param.grad.is_sparse or param.dtype != params[0].dtype \
                or param.device != params[0].device:  # Adam.step groups tensors by device and dtype
            return False
        grads.append(param.grad)
        exp_avgs.append(state["exp_avg"])
        exp_avg_sqs.append(state["exp_avg_sq"])
        steps.append(state["step"])
    beta1, beta2 = group["betas"]
    with th.no_grad():
        th._foreach_add_(steps, 1)
        th._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                        beta1=float(beta1), beta2=float(beta2), weight_decay=group["weight_decay"], eps=group["eps"],
                        maximize=False, grad_scale=None, found_inf=None)
    return True


def _zero_grad(opt: th.optim.Optimizer) -> None:
    """`opt.zero_grad()` (set_to_none, the default) without its profiler record."""
    for group in opt.param_groups:
        for param in group["params"]:
            param.grad = None


class _ActorPass(NamedTuple):
    """The actor's forward at a batch, as FastSAC's written-out backward (sac_grads) reads it."""

    tape: list[th.Tensor]
    latent: th.Tensor
    actions: th.Tensor
    log_prob: th.Tensor
    noise: th.Tensor
    std: th.Tensor
    log_std_raw: th.Tensor


# FastSAC's methods the written-out gradients stand in for (sac_grads computes what they would).
_REPLACED = ("_action_log_prob", "_q_values", "_critic_and_actor_steps")


class FastSAC(SAC):
    """stable_baselines3.SAC whose `train()` does the same update with fewer operations (module docstring)."""

    _critic_only: list[th.Tensor] = []
    _critic_own: list[th.Tensor] | None = None  # None: _fast_setup has not run for this model's networks
    # Each speed-up on its own switch, for bench/throughput.py --candidates (all on by default)
    fused_adam = True
    skip_critic_grads = True
    shared_features = True
    analytic_grads = True  # needs shared_features' direct path
    _plans: tuple[sac_grads.Plan, list[sac_grads.Plan]] | None = None

    def _setup_model(self) -> None:
        super()._setup_model()
        FlatTrainingMode.install(self.policy)
        if self.shared_features:
            DirectActing.install(self.policy)
        self._critic_own = None  # the lists _fast_setup makes name this model's tensors: made again on use

    def _excluded_save_params(self) -> list[str]:
        """SB3 pickles every other attribute into the zip: these lists would be stale copies of the networks."""
        return [*super()._excluded_save_params(), "_critic_only", "_polyak_src", "_polyak_dst", "_net_modules",
                "_features_once", "_actor_features", "_plans",
                "_critic_own", "_grad_params"]

    def _fast_optimizers(self, optimizers: list[th.optim.Optimizer]) -> None:
        """Every call: a checkpoint's optimizer state brings back the param groups' flags it was saved with."""
        fused = fused_adam_available(self.device)
        if not self.fused_adam:
            return
        for opt in optimizers:
            if isinstance(opt, th.optim.Adam):
                for group in opt.param_groups:
                    group["fused"], group["foreach"] = (True, False) if fused else (None, True)

    def get_parameters(self) -> dict[str, dict]:
        """SB3's state dicts, optimizer flags as SB3 leaves them: a checkpoint runs plain Adam under fast=false."""
        params = super().get_parameters()
        for name, state in params.items():
            if name.endswith("optimizer"):
                for group in state.get("param_groups", ()):
                    group["fused"], group["foreach"] = None, None  # th.optim.Adam's defaults, as SB3 builds it
        return params

    def _fast_setup(self) -> None:
        actor_owned = {id(p) for g in self.actor.optimizer.param_groups for p in g["params"]}
        # The critic's own weights; which of them are trained (requires_grad) is read on every train() call:
        # a user may freeze one between calls, and the actor loss must then leave it frozen.
        self._critic_own = [p for p in self.critic.parameters() if id(p) not in actor_owned]
        self._grad_params = [*self.actor.parameters(), *self.critic.parameters()]
        self._polyak_src = list(self.critic.parameters())
        self._polyak_dst = list(self.critic_target.parameters())
        nets = (self.actor, self.critic, self.critic_target)
        self._actor_features = feats = Features(self.actor)
        # One features tensor for all three networks where each computes it with SB3's weightless Flatten layers,
        # in the same order (an actor that transforms its features keeps them to itself), and the critics are
        # SB3's ContinuousCritic calls (a subclass's forward is called as it is).
        self._features_once = self.shared_features and _direct_actor(self.actor) and feats.mode != "sb3" and all(
            _inherited(n, ContinuousCritic, "forward") and (f := Features(n)).mode == feats.mode
            and f.keys == feats.keys for n in nets[1:])  # Features: "sb3" where a net has its own extract_features
        self._net_modules = [m for n in nets for m in n.modules()]
        # The written-out gradients replace the update's `_action_log_prob`, `_q_values` and
        # `_critic_and_actor_steps` calls: a subclass that overrides one gets autograd through its own (and so
        # does a model whose instance has one replaced, checked on every train() call: it may be set any time).
        own = _inherited(type(self), FastSAC, *_REPLACED)
        self._plans = self._analytic_plans() if self.analytic_grads and self._features_once and own else None

    def _analytic_plans(self) -> tuple[sac_grads.Plan, list[sac_grads.Plan]] | None:
        """The actor's and critics' layer plans where sac_grads can write the update's gradients out: plain
        Linear/ReLU MLPs, Linear heads, no critic weight the actor's optimizer owns (the actor loss would have to
        reach it). What can change between calls (frozen weights, tensor hooks) is `_grads_as_written`'s."""
        actor, critic = self.actor, self.critic
        plans = [sac_grads.mlp_plan(actor.latent_pi)] + [sac_grads.mlp_plan(q) for q in critic.q_networks]
        if any(plan is None for plan in plans) or type(actor.mu) is not th.nn.Linear \
                or type(actor.log_std) is not th.nn.Linear or len(self._critic_own) != len(list(critic.parameters())):
            return None
        return plans[0], plans[1:]  # type: ignore[return-value]

    def _grads_as_written(self) -> bool:
        """This call may write gradients out: every weight trained (autograd leaves a frozen one without a
        gradient, so Adam skips it) and no hook on a weight tensor (`register_hook`, post-accumulate hooks:
        autograd would run them, a written-out gradient cannot)."""
        return all(p.requires_grad and not p._backward_hooks and not getattr(p, "_post_accumulate_grad_hooks", None)
                   for p in self._grad_params)

    def _hooked(self) -> bool:
        """Module hooks anywhere in the networks (a user's, rlexp's fault injector's): the direct path would skip
        them, so this call goes through SB3's module calls."""
        return _hooks(self._net_modules)

    @staticmethod
    def _zero_grad(opt: th.optim.Optimizer, direct: bool) -> None:
        if direct and type(opt).zero_grad is th.optim.Optimizer.zero_grad and "zero_grad" not in vars(opt):
            _zero_grad(opt)
        else:
            opt.zero_grad()

    @staticmethod
    def _step(opt: th.optim.Optimizer, direct: bool) -> None:
        if not (direct and _direct_adam_step(opt)):
            opt.step()

    def _features(self, obs: th.Tensor | dict[str, th.Tensor], direct: bool) -> th.Tensor | None:
        """The weightless features all three networks compute from `obs`; None where they must compute them."""
        return self._actor_features(obs) if direct else None

    def _action_log_prob(self, obs: object, features: th.Tensor | None) -> tuple[th.Tensor, th.Tensor]:
        """actor.action_log_prob(obs), from precomputed features when there are some (no gSDE there)."""
        if features is None:
            return self.actor.action_log_prob(obs)
        actor = self.actor
        latent_pi = _mlp(actor.latent_pi, features)
        mean_actions = _linear(actor.mu, latent_pi)
        log_std = th.clamp(_linear(actor.log_std, latent_pi), LOG_STD_MIN, LOG_STD_MAX)
        return _squashed_gaussian(mean_actions, log_std, actor.action_dist.epsilon)  # type: ignore[return-value]

    @staticmethod
    def _q_values(critic: th.nn.Module, obs: object, features: th.Tensor | None,
                  actions: th.Tensor) -> tuple[th.Tensor, ...]:
        """critic(obs, actions), from precomputed features when there are some."""
        if features is None:
            return critic(obs, actions)
        qvalue_input = th.cat([features, actions], dim=1)
        return tuple(_mlp(q_net, qvalue_input) for q_net in critic.q_networks)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers += [self.ent_coef_optimizer]
        self._update_learning_rate(optimizers)
        self._fast_optimizers(optimizers)
        if self._critic_own is None:
            self._fast_setup()
        self._critic_only = [p for p in self._critic_own if p.requires_grad] if self.skip_critic_grads else []

        direct = self._features_once and not self._hooked()
        analytic = direct and self._plans is not None and self._grads_as_written() and _inherited(self, FastSAC,
                                                                                                  *_REPLACED)
        ent_coef_losses, ent_coefs, actor_losses, critic_losses = [], [], [], []
        for gradient_step in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            if self.use_sde:
                self.actor.reset_noise()

            obs, next_obs = replay_data.observations, replay_data.next_observations
            features, next_features = self._features(obs, direct), self._features(next_obs, direct)
            if analytic:
                pi = self._actor_pass(features)
                actions_pi, log_prob = pi.actions, pi.log_prob
            else:
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
                self._zero_grad(self.ent_coef_optimizer, direct)
                ent_coef_loss.backward()
                self._step(self.ent_coef_optimizer, direct)

            with th.no_grad():
                next_actions, next_log_prob = self._action_log_prob(next_obs, next_features)
                next_q_values = th.cat(self._q_values(self.critic_target, next_obs, next_features, next_actions), dim=1)
                next_q_values, _ = th.min(next_q_values, dim=1, keepdim=True)
                next_q_values = next_q_values - ent_coef * next_log_prob.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

            if analytic:
                critic_losses.append(self._critic_step_analytic(features, replay_data.actions, target_q_values))
                actor_losses.append(self._actor_step_analytic(features, pi, ent_coef))
            else:
                critic_loss, actor_loss = self._critic_and_actor_steps(obs, features, replay_data.actions,
                                                                       target_q_values, actions_pi, log_prob,
                                                                       ent_coef, direct)
                critic_losses.append(critic_loss)
                actor_losses.append(actor_loss)

            if gradient_step % self.target_update_interval == 0:
                with th.no_grad():  # = polyak_update: target * (1 - tau) + tau * param, in place
                    th._foreach_mul_(self._polyak_dst, 1 - self.tau)
                    th._foreach_add_(self._polyak_dst, self._polyak_src, alpha=self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

        self._n_updates += gradient_steps
        self._log_means(ent_coefs, actor_losses, critic_losses, ent_coef_losses, direct)

    def _critic_and_actor_steps(self, obs: object, features: th.Tensor | None, actions: th.Tensor,
                                target_q_values: th.Tensor, actions_pi: th.Tensor, log_prob: th.Tensor,
                                ent_coef: th.Tensor, direct: bool) -> tuple[th.Tensor, th.Tensor]:
        """SB3's critic and actor steps through autograd (direct calls where `direct`): their losses, detached."""
        current_q_values = self._q_values(self.critic, obs, features, actions)
        critic_loss = 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
        assert isinstance(critic_loss, th.Tensor)
        self._zero_grad(self.critic.optimizer, direct)
        critic_loss.backward()
        self._step(self.critic.optimizer, direct)

        # Actor loss: gradients reach the actions (and any weights the actor's optimizer owns), not the
        # critic's own weights, whose gradients SB3 computes only to discard them.
        for p in self._critic_only:
            p.requires_grad_(False)
        try:
            q_values_pi = th.cat(self._q_values(self.critic, obs, features, actions_pi), dim=1)
            min_qf_pi, _ = th.min(q_values_pi, dim=1, keepdim=True)
            actor_loss = (ent_coef * log_prob - min_qf_pi).mean()
            self._zero_grad(self.actor.optimizer, direct)
            actor_loss.backward()
        finally:
            for p in self._critic_only:
                p.requires_grad_(True)
        self._step(self.actor.optimizer, direct)
        return critic_loss.detach(), actor_loss.detach()

    def _actor_pass(self, features: th.Tensor) -> _ActorPass:
        """The actor's sample and log-prob at `features` without an autograd graph, with what its backward reads:
        the same operations, values and random draw as `_action_log_prob`."""
        actor, (plan, _) = self.actor, self._plans  # type: ignore[misc]
        with th.no_grad():
            tape: list[th.Tensor] = []
            latent = sac_grads.forward(plan, features, tape)
            mean = _linear(actor.mu, latent)
            log_std_raw = _linear(actor.log_std, latent)
            log_std = th.clamp(log_std_raw, LOG_STD_MIN, LOG_STD_MAX)
            actions, log_prob, noise, std = _squashed_gaussian_parts(mean, log_std, actor.action_dist.epsilon)
        return _ActorPass(tape, latent, actions, log_prob, noise, std, log_std_raw)  # type: ignore[arg-type]

    def _critic_step_analytic(self, features: th.Tensor, actions: th.Tensor, target_q_values: th.Tensor) -> th.Tensor:
        """SB3's critic step (0.5 * the sum of each critic's MSE to the target) with its gradients written out
        (sac_grads): bitwise the gradients autograd computes. Returns the loss."""
        _, plans = self._plans  # type: ignore[misc]
        with th.no_grad():
            x = th.cat([features, actions], dim=1)
            tapes: list[list[th.Tensor]] = [[] for _ in plans]
            current_q_values = [sac_grads.forward(plan, x, tape) for plan, tape in zip(plans, tapes, strict=True)]
            critic_loss = 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
            self._zero_grad(self.critic.optimizer, True)
            for plan, tape, current_q in zip(plans, tapes, current_q_values, strict=True):
                sac_grads.backward(plan, tape, sac_grads.mse_grad(current_q, target_q_values, 0.5))
        self._step(self.critic.optimizer, True)
        return critic_loss  # type: ignore[return-value]

    def _actor_step_analytic(self, features: th.Tensor, pi: _ActorPass, ent_coef: th.Tensor) -> th.Tensor:
        """SB3's actor step, mean(ent_coef * log_prob - min over the critics of Q(obs, a)), with its gradients
        written out (sac_grads): the critics' (just updated) weights get none, as in the autograd path. Returns
        the loss."""
        actor, (plan, plans) = self.actor, self._plans  # type: ignore[misc]
        n = features.shape[0]
        with th.no_grad():
            x = th.cat([features, pi.actions], dim=1)
            tapes: list[list[th.Tensor]] = [[] for _ in plans]
            q_values_pi = th.cat([sac_grads.forward(p, x, tape) for p, tape in zip(plans, tapes, strict=True)], dim=1)
            min_qf_pi, chosen = th.min(q_values_pi, dim=1, keepdim=True)
            actor_loss = (ent_coef * pi.log_prob.reshape(-1, 1) - min_qf_pi).mean()
            grad_actions = None
            cols = slice(features.shape[1], None)
            for i, (p, tape) in enumerate(zip(plans, tapes, strict=True)):  # min's gradient: the chosen critic's
                grad_q = (chosen == i).to(features.dtype) * (-1.0 / n)
                grad = sac_grads.backward(p, tape, grad_q, weights=False, input_cols=cols)
                grad_actions = grad if grad_actions is None else grad_actions + grad
            grad_mean, grad_log_std = sac_grads.squashed_gaussian_backward(
                grad_actions, ent_coef * (1.0 / n), pi.actions, pi.noise, pi.std, pi.log_std_raw,
                LOG_STD_MIN, LOG_STD_MAX, actor.action_dist.epsilon)
            self._zero_grad(actor.optimizer, True)
            grad_latent = None
            for head, grad in ((actor.mu, grad_mean), (actor.log_std, grad_log_std)):
                back = sac_grads.backward([head], [pi.latent], grad, input_cols=slice(None))
                grad_latent = back if grad_latent is None else grad_latent + back
            sac_grads.backward(plan, pi.tape, grad_latent)
        self._step(actor.optimizer, True)
        return actor_loss

    def _log_means(self, ent_coefs: list[th.Tensor], actor_losses: list[th.Tensor], critic_losses: list[th.Tensor],
                   ent_coef_losses: list[th.Tensor], direct: bool) -> None:
        # One host sync for every logged value: SB3's np.mean of each list, as float64 means over slices of one array
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
