"""Size rules found by asking PyTorch: which sweep sizes the model itself accepts.

A ViT with patch 16, a UNet with four poolings or an FPN with ``interpolate(scale_factor=2)`` needs H and W to be
multiples of some N; a CNN needs a minimum size. When eager PyTorch fails at a sweep point, the failure says nothing
about the export: onnxship moves each dim on its own to find the culprit, probes multiples of 2, 4, 8, 16 and 32
(then other divisors of the export size, e.g. 28 for patch 4 x window 7; and a minimum size), records the rule in the dim (``step`` / ``min``, written into the metadata) and sweeps only
sizes that follow it. A dim for which no other size runs is reported as "could not make valid inputs", never as a
fault of the exported candidate.

The reference is any object with ``infer(feeds) -> outputs`` (a ``TorchRunner``). This module needs numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from onnxship._errors import InputSpecError
from onnxship.spec._inputs import DimSpec, TensorSpec, dim_table, resolve_specs, sample_feeds, sweep_points

__all__ = ["MULTIPLES", "SweepPlan", "plan_sweep"]

MULTIPLES = (2, 4, 8, 16, 32)
_MAX_RUNS = 64  # reference runs the probe may spend


@dataclass
class SweepPlan:
    """The specs (with any size rules found), the sweep points PyTorch accepts, and what was found."""

    specs: list[TensorSpec]
    points: list[dict[str, int]]
    notes: list[str] = field(default_factory=list)
    rules: dict[str, str] = field(default_factory=dict)  # dim -> "a multiple of 16" / "at least 32"
    dropped: list[dict[str, Any]] = field(default_factory=list)  # points PyTorch rejects: {"dims", "error"}
    stuck: dict[str, str] = field(default_factory=dict)  # root dims no other size runs -> first error
    unrunnable: list[dict[str, int]] = field(
        default_factory=list
    )  # at the end of points: PyTorch rejects them

    @property
    def runnable(self) -> list[dict[str, int]]:
        """The points PyTorch runs (the export point first)."""
        return [p for p in self.points if p not in self.unrunnable]

    @property
    def problem(self) -> str | None:
        """The "could not make valid inputs" message when some dynamic dim cannot be varied at all."""
        if not self.stuck:
            return None
        parts = [f"{n} ({err})" for n, err in self.stuck.items()]
        return (
            "could not make valid inputs for dims "
            + ", ".join(parts)
            + ": PyTorch rejects onnxship's generated "
            "inputs at every other size tried"
        )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


class _Prober:
    def __init__(self, reference: Any, seed: int) -> None:
        self.reference, self.seed = reference, seed
        self.cache: dict[tuple[tuple[str, int], ...], str | None] = {}
        self.runs = 0

    def error(self, specs: list[TensorSpec], point: dict[str, int]) -> str | None:
        """None when PyTorch runs at the point, else the short error (cached per point)."""
        key = tuple(sorted(point.items()))
        if key in self.cache:
            return self.cache[key]
        if self.runs >= _MAX_RUNS:
            return "probe budget spent"
        self.runs += 1
        try:
            self.reference.infer(sample_feeds(specs, point, seed=self.seed + 104729 + self.runs))
            err = None
        except Exception as exc:  # the user's model rejecting a shape is data here
            err = _short(exc)
        self.cache[key] = err
        return err


def _with_dim(specs: list[TensorSpec], name: str, **changes: Any) -> list[TensorSpec]:
    out = []
    for s in specs:
        dims = tuple(replace(d, **changes) if d.name == name else d for d in s.dims)
        out.append(replace(s, dims=dims))
    return resolve_specs(out)


def _at(table: dict[str, DimSpec], export: dict[str, int], name: str, size: int) -> dict[str, int]:
    point = dict(export)
    point[name] = size
    for n, d in table.items():
        if d.parts:
            point[n] = sum(point[p] for p in d.parts) + d.offset
    return point


def _find_rule(
    prober: _Prober, specs: list[TensorSpec], name: str, failing: list[int]
) -> tuple[str, dict[str, int]] | None:
    """("a multiple of 16", {"step": 16, "min": 16}) or ("at least 32", {"min": 32}) for one root dim."""
    table = dim_table(specs)
    d = table[name]
    export = {n: t.value for n, t in table.items() if not t.parts}
    base = d.step or 1

    def runs(size: int) -> bool:
        return d.allowed(size) and prober.error(specs, _at(table, export, name, size)) is None

    divisors = [k for k in range(3, d.value + 1) if d.value % k == 0 and k not in MULTIPLES]
    for m in (*MULTIPLES, *divisors):  # powers of two first, then e.g. 28 (patch 4 x window 7)
        if m <= base or m % base or d.value % m:
            continue
        ups = sorted({max(m, -(-v // m) * m) for v in failing})
        ups = [u if d.max is None or u <= d.max else d.max // m * m for u in ups]
        if any(u in failing or u < m for u in ups):
            continue
        if not all(runs(u) for u in ups):
            continue
        half = ups[0] + m // 2 if ups[0] + m // 2 != d.value else ups[0] - m // 2
        if half >= 1 and d.allowed(half) and runs(half):
            continue  # a size between the multiples runs too: not a multiple rule
        return f"a multiple of {m}", {"step": m, "min": max(d.min, m)}
    # A minimum size: the smallest passing multiple of the step between the smallest failing size and the export.
    lo = min(failing)
    if lo >= d.value:
        return None
    lo_k, hi_k = lo // base, d.value // base  # sizes k*base: lo_k fails, hi_k runs
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) // 2
        if runs(mid * base):
            hi_k = mid
        else:
            lo_k = mid
    least = hi_k * base
    if least <= d.min:
        return None
    above = least if least != d.value else d.value + base  # some size other than the export one must run
    if not runs(above):
        return None
    return f"at least {least}", {"min": least}


def _failing(prober: _Prober, specs: list[TensorSpec], points: list[dict[str, int]]) -> list[dict[str, int]]:
    return [p for p in points[1:] if prober.error(specs, p) is not None]


def _infer_relations(prober: _Prober, plan: SweepPlan) -> None:
    """A dim that only runs when it equals another dim, or the sum of two (a mask over past + new tokens declared
    with its own name), becomes derived from them: the sweep then moves it with its parts."""
    for _ in range(4):
        table = dim_table(plan.specs)
        roots = {n: d.value for n, d in table.items() if not d.parts}
        failing = _failing(prober, plan.specs, plan.points)
        if not failing:
            return
        suspects = {n for p in failing for n in roots if p[n] != roots[n]}
        best: tuple[int, str, tuple[str, ...], list[TensorSpec]] | None = None
        for t in sorted(suspects):
            others = [n for n in roots if n != t]
            options = [(a,) for a in others if roots[a] == roots[t]]
            options += [
                (a, b)
                for i, a in enumerate(others)
                for b in others[i + 1 :]
                if roots[a] + roots[b] == roots[t]
            ]
            for parts in options:
                try:
                    trial = _with_dim(
                        plan.specs, t, parts=parts, offset=0, value=0, max=None, step=None, min=1
                    )
                except InputSpecError:  # t is itself part of a derived dim
                    continue
                points = sweep_points(trial)
                left = _failing(prober, trial, points)
                runs_moved = [p for p in points[1:] if p[t] != points[0][t] and p not in left]
                if not runs_moved or len(left) >= len(failing):
                    continue  # t must run somewhere it moves now, and fewer points may fail
                if best is None or len(left) < best[0]:
                    best = (len(left), t, parts, trial)
        if best is None:
            return
        _, t, parts, trial = best
        plan.specs, plan.points = trial, sweep_points(trial)
        rel = "+".join(parts)
        plan.rules[t] = f"= {' + '.join(parts)}"
        plan.notes.append(
            f"dim {t!r} must equal {' + '.join(parts)}: PyTorch itself fails when it moves on its own; the sweep "
            f"moves it with {' and '.join(repr(p) for p in parts)} (declare {t}={rel} to skip this probe)"
        )


def plan_sweep(
    reference: Any,
    specs: list[TensorSpec],
    *,
    points: list[dict[str, int]] | None = None,
    seed: int = 0,
    rounds: int = 3,
    probe: bool = True,
) -> SweepPlan:
    """Check each sweep point on the reference; find size rules for the dims that fail and re-plan with them.

    Returns the specs with rules recorded (``DimSpec.step`` / ``min``), the points (the export point first, then the
    points the reference runs, then the ones it rejected: the shape check reports those as not runnable) and notes
    saying what was found. When generated values fail even at the export shape nothing is probed (that is a
    value problem for the checks to report, not a size rule).
    ``probe=False`` only plans the points (nothing runs).
    """
    specs = resolve_specs(specs)
    prober = _Prober(reference, seed)
    plan = SweepPlan(specs=specs, points=points if points is not None else sweep_points(specs))
    if not probe or not dim_table(specs):
        return plan
    for k in range(3):  # generated (not the user's) values at the export shape: a few draws
        try:
            reference.infer(sample_feeds(specs, plan.points[0], seed=seed + 7 + k, use_samples=False))
        except Exception:
            return plan  # invalid even at the export shape: a value problem for the checks to report, not a size rule
    initial_bad = [p for p in plan.points[1:] if prober.error(specs, p) is not None]
    for _ in range(rounds):
        table = dim_table(plan.specs)
        export = {n: d.value for n, d in table.items() if not d.parts}
        bad = [p for p in plan.points[1:] if prober.error(plan.specs, p) is not None]
        if not bad:
            break
        culprits: dict[str, list[int]] = {}
        for p in bad:
            for n in export:
                if p[n] != export[n] and prober.error(plan.specs, _at(table, export, n, p[n])) is not None:
                    culprits.setdefault(n, [])
                    if p[n] not in culprits[n]:
                        culprits[n].append(p[n])
        changed = False
        for n, failing in culprits.items():
            found = _find_rule(prober, plan.specs, n, sorted(failing))
            if found is None:
                continue
            rule, changes = found
            before = plan.rules.get(n)
            plan.rules[n] = rule if before is None else f"{before} and {rule}"
            plan.specs = _with_dim(plan.specs, n, **changes)
            fails = ", ".join(map(str, sorted(failing)))
            if "step" in changes:
                how = f"the sweep uses only multiples (declare {n}={table[n].value}..MAX/{changes['step']} to skip this probe)"
            else:
                how = f"the sweep and the declared range start at {changes['min']}"
            plan.notes.append(f"dim {n!r} must be {rule}: PyTorch itself fails at {n}={fails}; {how}")
            changed = True
        if not changed:
            break
        plan.points = sweep_points(plan.specs)
    _infer_relations(prober, plan)
    # Drop what still fails, and name dims that could not be moved at all.
    table = dim_table(plan.specs)
    export = {n: d.value for n, d in table.items() if not d.parts}
    kept = plan.points[:1]
    for p in plan.points[1:]:
        err = prober.error(plan.specs, p)
        if err is None:
            kept.append(p)
        else:
            plan.dropped.append({"dims": p, "error": err})
    for n in export:
        if table[n].parts:
            continue
        moved = [p for p in kept[1:] if p[n] != export[n]]
        if not moved:
            tried = [d["dims"][n] for d in plan.dropped if d["dims"][n] != export[n]]
            if tried:
                first = next(d["error"] for d in plan.dropped if d["dims"][n] != export[n])
                plan.stuck[n] = f"tried {n}={', '.join(map(str, sorted(set(tried))))}; first error {first}"
    if plan.dropped:
        shown = "; ".join(f"{d['dims']}: {d['error']}" for d in plan.dropped[:3])
        plan.notes.append(
            f"{len(plan.dropped)} sweep shape(s) skipped: could not make valid inputs there, PyTorch itself "
            f"rejects them ({shown}); give value kinds (mask, offsets(n), lengths(seq)), size rules "
            f"(height=224..512/16) or --data"
        )
    # Sizes PyTorch rejected stay in the sweep, reported as not runnable there (never as verified).
    for p in initial_bad + [d["dims"] for d in plan.dropped]:
        if p not in kept and p not in plan.unrunnable:
            plan.unrunnable.append(p)
    plan.points = kept + plan.unrunnable
    return plan
