"""Dims shared across inputs: one table of every named dim (resolved sums and shared sizes) and the sweep points
(min / export / max sizes, multiples of each dim's step) drawn from it.
"""

from __future__ import annotations

from dataclasses import replace

from onnxship._errors import InputSpecError
from onnxship.spec._tensors import DimSpec, TensorSpec


def _merge(seen: DimSpec, d: DimSpec) -> DimSpec:
    """Two declarations of one dim name: bare ones take the sized one's size; sized ones must agree."""
    if d.bare:
        if d.step and seen.step and d.step != seen.step:
            raise InputSpecError(
                f"dim {d.name!r} is declared with steps {seen.step} and {d.step}", hint="use one step per dim"
            )
        return replace(seen, step=seen.step or d.step, min=max(seen.min, d.min)) if d.step else seen
    if seen.bare:
        return _merge(d, seen)
    if bool(seen.parts) != bool(d.parts) or (seen.parts, seen.offset) != (d.parts, d.offset):
        raise InputSpecError(
            f"dim {d.name!r} is declared twice differently ({seen} and {d})",
            hint="declare a derived dim (total=past+seq) the same way everywhere, or once and by name elsewhere",
        )
    if not seen.parts and (seen.value, seen.max, seen.step) != (d.value, d.max, d.step):
        raise InputSpecError(
            f"dim {d.name!r} is declared twice with different sizes ({seen} and {d})",
            hint="a shared dim name must have the same N..MAX/STEP everywhere",
        )
    return seen


def _raw_table(specs: list[TensorSpec] | tuple[TensorSpec, ...]) -> dict[str, DimSpec]:
    table: dict[str, DimSpec] = {}
    for spec in specs:
        for d in spec.dims:
            if d.name is None:
                continue
            table[d.name] = _merge(table[d.name], d) if d.name in table else d
    return table


def _resolve_table(table: dict[str, DimSpec]) -> dict[str, DimSpec]:
    out: dict[str, DimSpec] = {}
    for name, d in table.items():
        if d.bare:
            raise InputSpecError(
                f"dim {name!r} has no size: it is only named, never given as {name}=N",
                hint=f"write {name}=N (N = the export size) in one of the input specs",
            )
        out[name] = d
    for name, d in out.items():
        if not d.parts:
            continue
        for p in d.parts:
            src = out.get(p)
            if src is None:
                raise InputSpecError(
                    f"dim {name!r} = {'+'.join(d.parts)} refers to {p!r}, which no input declares",
                    hint=f"declare {p}=N in one of the input specs",
                )
            if src.parts:
                raise InputSpecError(
                    f"dim {name!r} is the sum of {p!r}, which is itself a sum",
                    hint="write derived dims as sums of plain dims",
                )
        value = sum(out[p].value for p in d.parts) + d.offset
        if d.value and d.value != value:
            raise InputSpecError(
                f"dim {name!r} = {'+'.join(d.parts)} is {d.value} in the sample but "
                f"{' + '.join(str(out[p].value) for p in d.parts)} = {value}",
                hint="make the sample sizes consistent with the declared sum",
            )
        mins = sum(out[p].min for p in d.parts) + d.offset
        maxes = [out[p].max for p in d.parts]
        mx = sum(m for m in maxes if m is not None) + d.offset if all(m is not None for m in maxes) else None
        out[name] = replace(d, value=value, min=mins, max=mx)
    return out


def resolve_specs(specs: list[TensorSpec] | tuple[TensorSpec, ...]) -> list[TensorSpec]:
    """Fill in bare dims (``batch``) from their sized declaration and derived dims (``total=past+seq``)."""
    table = _resolve_table(_raw_table(specs))
    out = []
    for spec in specs:
        dims = tuple(table[d.name] if d.name else d for d in spec.dims)
        out.append(spec if dims == spec.dims else replace(spec, dims=dims))
    return out


def dim_table(specs: list[TensorSpec] | tuple[TensorSpec, ...]) -> dict[str, DimSpec]:
    """The dynamic dims by name across inputs (resolved); a name used with different values is an error."""
    return _resolve_table(_raw_table(specs))


def _round_up(v: int, step: int | None) -> int:
    return v if not step else max(step, -(-v // step) * step)


def _round_down(v: int, step: int | None) -> int:
    return v if not step else max(step, v // step * step)


def _levels(d: DimSpec) -> dict[str, int]:
    """A root dim's sweep sizes: low (smallest allowed), odd (just above the export size) and max."""
    step = d.step
    low = _round_up(max(d.min, 1), step)
    if step:
        odd = d.value + step
        if d.max is not None and odd > d.max:
            odd = d.value - step if d.value - step >= low else low
        mx = _round_down(d.max, step) if d.max is not None else d.value * 2
    else:
        odd = d.value + 1 if (d.value + 1) % 2 else d.value + 2
        if d.max is not None and odd > d.max:
            odd = d.max if d.max != d.value else max(d.min, 1)
        mx = d.max if d.max is not None else d.value * 2 + 1
    return {"low": low, "odd": odd, "max": max(mx, low)}


def _complete(point: dict[str, int], table: dict[str, DimSpec]) -> dict[str, int]:
    out = dict(point)
    for name, d in table.items():
        if d.parts:
            out[name] = sum(point[p] for p in d.parts) + d.offset
    return out


def complete_point(point: dict[str, int], specs: list[TensorSpec] | tuple[TensorSpec, ...]) -> dict[str, int]:
    """The point with every derived dim (``total=past+seq``) recomputed from its parts."""
    table = dim_table(specs)
    out = dict(point)
    for name, d in table.items():
        if d.parts and all(p in out for p in d.parts):
            out[name] = sum(int(out[p]) for p in d.parts) + d.offset
    return out


def sweep_points(
    specs: list[TensorSpec] | tuple[TensorSpec, ...], *, include_export: bool = True
) -> list[dict[str, int]]:
    """Dim assignments to verify at: the export values; then every dim together at its smallest allowed size, an
    odd size (the next step with a step) and the max; then each dim on its own at the odd size (so a size rule on
    one axis does not hide the others). Derived dims follow their parts; stepped dims take only multiples.
    """
    table = dim_table(specs)
    if not table:
        return [{}] if include_export else []
    roots = {n: d for n, d in table.items() if not d.parts}
    levels = {n: _levels(d) for n, d in roots.items()}
    export = {n: d.value for n, d in roots.items()}
    candidates = [export] if include_export else []
    for which in ("low", "odd", "max"):
        candidates.append({n: lv[which] for n, lv in levels.items()})
    if len(roots) > 1:
        for n, lv in levels.items():
            candidates.append(export | {n: lv["odd"]})
    full_export = _complete(export, table)
    points: list[dict[str, int]] = []
    for c in candidates:
        point = _complete(c, table)
        if point not in points and (include_export or point != full_export):
            points.append(point)
    return points
