"""Which loss trains the pixel encoder: one config choice, the `routing` group (rlexp/conf/routing/), three options.

`routing=actor|separate|critic` selects rlexp/conf/routing/NAME.yaml, which sets `cfg.routing` to NAME; the default
option (rlexp/conf/routing/default.yaml) sets it to null and leaves SB3's choice. routing_kwargs reads that value.

- actor:    SB3 share_features_extractor=True. One encoder, in the actor optimizer; the critic sees it
            without gradient, so the encoder learns only from the policy loss.
- separate: SB3 SAC default. Actor and critic each own an encoder, each trained by its own loss.
- critic:   DrQ-v2. One encoder shared by actor and critic but optimized by the critic (TD) loss only;
            the actor reads detached features; the target critic has its own encoder copy, moved by
            Polyak averaging with the rest of the target network. Pixel Push learns only with this one.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import Actor, MultiInputPolicy, SACPolicy

from rlexp.errors import ConfigError

ROUTINGS = ("actor", "separate", "critic")  # = rlexp/conf/routing/*.yaml but default.yaml (tests keep them equal)


class DetachedEncoderActor(Actor):
    """Actor whose features carry no gradient back into the (critic-owned) encoder."""

    def extract_features(self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor) -> th.Tensor:
        return super().extract_features(obs, features_extractor).detach()


class CriticEncoderSACPolicy(SACPolicy):
    """SAC policy with DrQ-v2 routing: encoder parameters live in the critic optimizer only.

    A plain importable class, so `SAC.save`/`SAC.load` keep the routing without custom_objects.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["share_features_extractor"] = True  # one encoder object for actor and critic
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return DetachedEncoderActor(**actor_kwargs).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> ContinuousCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        # share_features_extractor=False in the critic means "compute features WITH gradient".
        critic_kwargs["share_features_extractor"] = False
        return ContinuousCritic(**critic_kwargs).to(self.device)

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor()
        encoder_ids = {id(p) for p in self.actor.features_extractor.parameters()}
        self.actor.optimizer = self.optimizer_class(
            [p for p in self.actor.parameters() if id(p) not in encoder_ids],
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )
        self.critic = self.make_critic(features_extractor=self.actor.features_extractor)
        self.critic.optimizer = self.optimizer_class(
            self.critic.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )  # type: ignore[call-arg]
        self.critic_target = self.make_critic(features_extractor=None)  # its own encoder
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.set_training_mode(False)


class CriticEncoderMultiInputPolicy(CriticEncoderSACPolicy):
    """Dict-observation variant (same as SB3's MultiInputPolicy: CombinedExtractor unless told otherwise)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from stable_baselines3.common.torch_layers import CombinedExtractor

        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(*args, **kwargs)


def routing_kwargs(routing: str | None, algo_cls: type) -> dict[str, Any]:
    """Constructor overrides for the algorithm: `policy` for critic, `share_features_extractor` otherwise.

    Returns {"policy": ..., "policy_kwargs": {...}} entries to merge; empty for routing=null (SB3 default).
    """
    if routing is None:
        return {}
    if routing not in ROUTINGS:
        raise ConfigError(
            f"routing must be one of {', '.join(ROUTINGS)} (or null for SB3's default), got {routing!r}"
        )
    from stable_baselines3 import SAC, TD3

    if routing == "critic":
        if not issubclass(algo_cls, SAC):
            raise ConfigError(f"routing=critic is a SAC policy (DrQ-v2 style); algo is {algo_cls.__name__}")
        return {"policy": CriticEncoderMultiInputPolicy, "policy_kwargs": {}}
    if not issubclass(algo_cls, (SAC, TD3)):
        raise ConfigError(
            f"routing={routing} applies to actor-critic off-policy algos (SAC, TD3); "
            f"algo is {algo_cls.__name__}"
        )
    return {"policy_kwargs": {"share_features_extractor": routing == "actor"}}


__all__ = [
    "ROUTINGS",
    "CriticEncoderMultiInputPolicy",
    "CriticEncoderSACPolicy",
    "DetachedEncoderActor",
    "MultiInputPolicy",
    "routing_kwargs",
]
