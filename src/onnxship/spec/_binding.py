"""Bind named inputs to forward()'s parameters: by name when names match, else by position (recorded).

Both exporters read a trailing dict in ``args`` as keyword arguments, and a peer tool swaps dict inputs silently when
their order differs from forward()'s; binding by name in one place avoids both.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from onnxship._errors import ConfigError

__all__ = ["Binding", "bind_inputs"]


@dataclass(frozen=True)
class Binding:
    """Which input goes to which forward() parameter, positional first (forward's order), then keywords."""

    positional: tuple[str, ...]  # input names passed positionally, in forward()'s order
    keyword: tuple[tuple[str, str], ...] = ()  # (input name, parameter name) passed as keywords
    params: dict[str, str] = field(default_factory=dict)  # input name -> parameter name
    by_position: bool = False  # names did not match forward()'s parameters; bound by position

    @property
    def order(self) -> tuple[str, ...]:
        """Input names in the order the exporters see them (graph input order)."""
        return self.positional + tuple(n for n, _ in self.keyword)

    def call_args(self, values: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args = tuple(values[n] for n in self.positional)
        kwargs = {p: values[n] for n, p in self.keyword}
        return args, kwargs


def _forward_params(model: Any) -> list[inspect.Parameter]:
    fn = model.forward if hasattr(model, "forward") else model
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p for p in sig.parameters.values() if p.name != "self"]


def bind_inputs(model: Any, names: list[str] | tuple[str, ...]) -> Binding:
    """Bind input names to the model's forward() parameters.

    Raises:
        ConfigError: names partly match forward()'s parameters, or there are more inputs than parameters.
    """
    params = _forward_params(model)
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    named = [
        p
        for p in params
        if p.kind
        in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.KEYWORD_ONLY,
        )
    ]
    pnames = [p.name for p in named]
    matched = [n for n in names if n in pnames]
    if names and len(matched) == len(names):
        # By name: positional in forward()'s order while contiguous, the rest as keywords.
        positional: list[str] = []
        keyword: list[tuple[str, str]] = []
        gap = False
        for p in named:
            if p.name in names and not gap and p.kind is not inspect.Parameter.KEYWORD_ONLY:
                positional.append(p.name)
            elif p.name in names:
                keyword.append((p.name, p.name))
            else:
                gap = True
        missing = [
            p.name
            for p in named
            if p.name not in names
            and p.default is inspect.Parameter.empty
            and p.kind is not inspect.Parameter.KEYWORD_ONLY
        ]
        if missing:
            raise ConfigError(
                f"forward() needs {missing} but the inputs are {list(names)}",
                hint="add an --input for each required forward() parameter",
            )
        return Binding(tuple(positional), tuple(keyword), {n: n for n in names})
    if matched:
        raise ConfigError(
            f"inputs {list(names)} only partly match forward()'s parameters {pnames}",
            hint="name every input after a forward() parameter, or none of them (then they bind by position)",
        )
    positional_params = [p for p in named if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    if len(names) > len(positional_params) and not variadic:
        raise ConfigError(
            f"{len(names)} inputs given but forward() takes {len(positional_params)} "
            f"positional parameters {[p.name for p in positional_params]}",
            hint="drop the extra --input or check the model",
        )
    required = [p.name for p in positional_params[len(names) :] if p.default is inspect.Parameter.empty]
    if required:
        raise ConfigError(
            f"forward() also needs {required}; inputs given: {list(names)}",
            hint="add an --input for each required forward() parameter",
        )
    mapping = {
        n: (positional_params[i].name if i < len(positional_params) else n) for i, n in enumerate(names)
    }
    return Binding(tuple(names), (), mapping, by_position=bool(params))
