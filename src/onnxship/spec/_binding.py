"""Bind named inputs to forward()'s parameters: by name when names match, else by position (recorded).

Both exporters read a trailing dict in ``args`` as keyword arguments, and a peer tool swaps dict inputs silently when
their order differs from forward()'s; binding by name in one place avoids both.

Dict parameters (``forward(self, inputs: dict)``) take flattened input names ``inputs.image``, ``inputs.meta.ids``:
the binding rebuilds the nested dict for each call, and :func:`flat_module` wraps such a model for the exporters so
that every ONNX input is one tensor.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from onnxship._errors import ConfigError

__all__ = ["Binding", "bind_inputs", "flat_module"]


@dataclass(frozen=True)
class Binding:
    """Which input goes to which forward() parameter, positional first (forward's order), then keywords."""

    positional: tuple[str, ...]  # input names passed positionally, in forward()'s order
    keyword: tuple[tuple[str, str], ...] = ()  # (input name, parameter name) passed as keywords
    params: dict[str, str] = field(default_factory=dict)  # input name -> parameter name
    by_position: bool = False  # names did not match forward()'s parameters; bound by position
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dict parameter -> its flattened inputs

    @property
    def order(self) -> tuple[str, ...]:
        """Input names in the order the exporters see them (graph input order)."""
        slots = self.positional + tuple(n for n, _ in self.keyword)
        return tuple(m for n in slots for m in self.groups.get(n, (n,)))

    def _value(self, slot: str, values: dict[str, Any]) -> Any:
        members = self.groups.get(slot)
        if members is None:
            return values[slot]
        nested: dict[str, Any] = {}
        for m in members:
            path = m.split(".")[1:]
            node = nested
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = values[m]
        return nested

    def call_args(self, values: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args = tuple(self._value(n, values) for n in self.positional)
        kwargs = {p: self._value(n, values) for n, p in self.keyword}
        return args, kwargs


def _forward_params(model: Any) -> list[inspect.Parameter]:
    fn = model.forward if hasattr(model, "forward") else model
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p for p in sig.parameters.values() if p.name != "self"]


def bind_inputs(model: Any, names: list[str] | tuple[str, ...]) -> Binding:
    """Bind input names to the model's forward() parameters (``parent.key`` names fill a dict parameter).

    Raises:
        ConfigError: names partly match forward()'s parameters, or there are more inputs than parameters.
    """
    flat = getattr(model, "_onnxship_flat_params", None)
    if flat is not None and list(flat) == list(names):  # a flat_module wrapper: positional, in its order
        return Binding(tuple(names), (), dict(flat))
    pnames = {p.name for p in _forward_params(model)}
    parent = {n: n.split(".", 1)[0] for n in names if "." in n and n.split(".", 1)[0] in pnames}
    if not parent:
        return _bind_flat(model, names)
    slots: list[str] = []
    for n in names:
        slot = parent.get(n, n)
        if slot in names and n in parent:
            raise ConfigError(
                f"input {slot!r} is given both as a tensor and as a dict ({n!r})",
                hint=f"name the dict parameter's entries {slot}.KEY only",
            )
        if slot not in slots:
            slots.append(slot)
    inner = _bind_flat(model, slots)
    groups = {s: tuple(n for n in names if parent.get(n) == s) for s in set(parent.values())}
    params = {m: inner.params.get(s, s) for s in slots for m in groups.get(s, (s,))}
    return Binding(inner.positional, inner.keyword, params, inner.by_position, groups)


def _bind_flat(model: Any, names: list[str] | tuple[str, ...]) -> Binding:
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


def flat_module(model: Any, binding: Binding) -> tuple[Any, Binding]:
    """Wrap a model whose forward() takes dicts so that it takes one tensor per flattened input name.

    The wrapper's forward() has one parameter per input (``inputs.image`` -> ``inputs_image``), rebuilds the dicts
    and calls the model; both exporters and the reference run then see plain tensors.
    """
    import torch

    order = list(binding.order)
    pnames: list[str] = []
    for n in order:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in n)
        p = base if base.isidentifier() else f"in_{base}"
        while p in pnames:
            p += "_"
        pnames.append(p)
    inner = binding

    class DictInputs(torch.nn.Module):
        """Flat tensors in, the wrapped model's dict parameters rebuilt (added by onnxship for dict inputs)."""

        def __init__(self, wrapped: torch.nn.Module) -> None:
            super().__init__()
            self.model = wrapped

        def forward(self, *flat: Any) -> Any:
            args, kwargs = inner.call_args(dict(zip(order, flat, strict=True)))
            return self.model(*args, **kwargs)

    DictInputs.forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in pnames]
    )
    wrapper = DictInputs(model).eval()
    wrapper._onnxship_flat_params = dict(zip(order, pnames, strict=True))
    return wrapper, Binding(tuple(order), (), dict(zip(order, pnames, strict=True)))
