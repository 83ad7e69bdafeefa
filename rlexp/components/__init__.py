"""Swappable pieces, one module per config group: envs (`env`), encoders (`encoder`), buffers (`buffer`),
policies (`routing`). Config `_target_` entries name their classes and factories."""

# Class paths that recorded configs of older runs (model.meta.json, checkpoint metas) may name, and where those
# classes live now. Applied where a `_target_` is resolved or instantiated, so old runs still evaluate and resume.
MOVED_TARGETS = {
    "rlexp.components.pixel_buffer.PixelHerReplayBuffer": "rlexp.components.buffers.PixelHerReplayBuffer",
    "rlexp.components.augment.DrQHerReplayBuffer": "rlexp.components.buffers.DrQHerReplayBuffer",
    "rlexp.components.pixels.PixelObservation": "rlexp.components.envs.PixelObservation",
}


def current_target(target: str | None) -> str | None:
    """The importable path for a `_target_`, old or current."""
    return MOVED_TARGETS.get(target, target) if isinstance(target, str) else target


def with_current_target(spec):  # noqa: ANN001, ANN201 - a dict or DictConfig with `_target_`, same kind back
    """`spec` with its `_target_` made current: a shallow copy when it names a moved class, else `spec` itself."""
    target = spec.get("_target_") if hasattr(spec, "get") else None
    if target not in MOVED_TARGETS:
        return spec
    spec = spec.copy()
    spec["_target_"] = MOVED_TARGETS[target]
    return spec
