"""The search space: Hydra's sweep syntax (as hydra-optuna-sweeper wrote it) turned into Optuna distributions.

    key: choice(a, b, c)               categorical over the values (lists and dicts as their override text)
    key: interval(lo, hi)              uniform float in [lo, hi]; int(interval(lo, hi)): integer in [lo, hi]
    key: tag(log, interval(lo, hi))    log-uniform (int(...) inside: integer, log-uniform)
    key: range(start, stop, step)      integers (or floats) start, start+step, ... below stop, as Hydra's range
    key: value                         not a sweep: fixed for every trial

`hydra.sweeper.params` come first, the command line after: a key given on both keeps the command line's value or
sweep (`algo.gamma=0.95` fixes it, `'algo.tau=choice(0.005,0.01)'` narrows it).
"""


import math
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer

from rlexp.errors import ConfigError


@dataclass
class Param:
    """One searched key: the override's prefix (`++`, `+` or none), its key, and its Optuna distribution."""

    prefix: str
    key: str
    distribution: Any

    def override(self, value: Any) -> str:
        """The override that sets this key to a sampled value."""
        if isinstance(value, bool):
            value = str(value).lower()
        return f"{self.prefix}{self.key}={value}"


def _prefix(override: Override) -> str:
    element = override.get_key_element()
    return element[: len(element) - len(element.lstrip("+~"))]


def _choices(override: Override) -> list[Any]:
    out = []
    for x in override.sweep_iterator(transformer=Transformer.encode):
        if not isinstance(x, str | int | float | bool):
            raise ConfigError(f"{override.input_line}: choices must be values, got {x!r}")
        out.append(x)
    return out


def distribution(override: Override) -> Any:
    """The Optuna distribution of a sweep override."""
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(_choices(override))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if not step or (stop - start) / step <= 0:
            raise ConfigError(f"{override.input_line}: an empty range")
        n = math.ceil((stop - start) / step)  # Hydra's range excludes stop
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(int(start), int(start + (n - 1) * step), step=int(step))
        return FloatDistribution(float(start), float(start + (n - 1) * step), step=float(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{override.input_line}: not a search space (choice, interval, range)")


def parse(params: list[str], arguments: list[str]) -> tuple[list[Param], list[str]]:
    """The searched keys and the fixed overrides every trial carries, from the preset's params then the command
    line (the later one of a key wins). ConfigError on a mistake."""
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides([*params, *arguments])
    except HydraException as exc:
        raise ConfigError(" ".join(str(exc).splitlines()[:2])) from None
    by_key: dict[str, Override] = {}
    for o in parsed:
        by_key.pop(o.key_or_group, None)  # keep the command line's order for its keys
        by_key[o.key_or_group] = o
    space, fixed = [], []
    for key, o in by_key.items():
        if o.is_sweep_override():
            if o.is_hydra_override():
                raise ConfigError(f"{o.input_line}: a hydra.* key cannot be searched")
            space.append(Param(_prefix(o), key, distribution(o)))
        else:
            fixed.append(o.input_line)
    return space, fixed
