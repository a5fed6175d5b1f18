"""Serving limits of a release: the one place that says how large a batch the release may be given.

The largest batch is a property of the release, not of whichever tool serves it: the user declares the batch dim's
range (``batch=1..64``), the export's shape sweep verifies sizes inside it, and ``ship`` records the result in the
release metadata (``serving`` in the ``.meta.json`` sidecar and the ONNX metadata_props). Every consumer reads it
from there: the Triton config (``max_batch_size``), ``onnxship serve`` (the largest request and merged batch), the
MLflow model metadata and the KServe manifest. A flag (``--max-batch-size``, ``--max-batch``) may lower it, never
raise it: a batch nobody verified is refused the same way everywhere.

Releases written before the record existed get the same answer, derived from the sidecar's input specs and
``verified_dims``.

This module is pure Python (no onnx, no numpy): ``onnxship serve`` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onnxship._errors import ConfigError, OnnxshipError

__all__ = ["SERVING_KEY", "ServingLimits", "serving_limits"]

SERVING_KEY = "serving"  # the metadata key ship writes


@dataclass(frozen=True)
class ServingLimits:
    """How the release may be batched.

    ``max_batch`` is the largest batch verified inside the declared range (``None``: the release records no bound,
    e.g. an export without a sweep); ``batch_dim`` is the dynamic dim every input starts with (``None``: the model
    cannot be batched along axis 0, ``why_not`` says why).
    """

    batch_dim: str | None
    max_batch: int | None
    source: str  # "declared" (the user's range, verified), "verified" (the sweep's largest), "none"
    declared: int | None = None  # the declared maximum of the batch dim, if any
    verified: int | None = None  # the largest batch the sweep verified, if recorded
    why_not: str | None = None

    @property
    def batchable(self) -> bool:
        return self.batch_dim is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_dim": self.batch_dim,
            "max_batch": self.max_batch,
            "source": self.source,
            "declared": self.declared,
            "verified": self.verified,
            "why_not": self.why_not,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServingLimits:
        def _int(v: Any) -> int | None:
            return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        dim = data.get("batch_dim")
        return cls(
            batch_dim=str(dim) if isinstance(dim, str) and dim else None,
            max_batch=_int(data.get("max_batch")),
            source=str(data.get("source") or "none"),
            declared=_int(data.get("declared")),
            verified=_int(data.get("verified")),
            why_not=str(data["why_not"]) if data.get("why_not") else None,
        )

    def describe(self) -> str:
        if not self.batchable:
            return f"not batchable ({self.why_not})" if self.why_not else "not batchable"
        if self.max_batch is None:
            return f"{self.batch_dim}: no recorded maximum"
        how = (
            f"declared {self.batch_dim}=..{self.declared}, verified"
            if self.source == "declared"
            else "the largest batch the shape sweep verified"
        )
        return f"{self.batch_dim} up to {self.max_batch} ({how})"

    def resolve(
        self,
        override: int | None,
        flag: str,
        *,
        zero_disables: bool = False,
        error: type[OnnxshipError] = ConfigError,
    ) -> int | None:
        """The batch limit a consumer uses: the release's, or ``override`` when it is within it.

        Raises:
            ConfigError (or ``error``): ``override`` is above the release's largest batch, or below what the flag
            allows.
        """
        if override is None:
            return self.max_batch if self.batchable else None
        floor = 0 if zero_disables else 1
        if override < floor:
            raise error(
                f"{flag} {override} must be >= {floor}" + (" (0 disables batching)" if zero_disables else ""),
                hint=f"{flag} N with N between {floor} and the release's largest batch",
            )
        if override == 0:
            return 0
        if self.max_batch is not None and override > self.max_batch:
            kind = "declared" if self.source == "declared" else "verified"
            raise error(
                f"{flag} {override} is above the {kind} batch maximum {self.max_batch} of this release "
                f"({self.describe()})",
                hint=f"use {flag} {self.max_batch} or less, or declare {self.batch_dim}=1..{override} in the "
                "input spec and ship again (the sweep then verifies it)",
            )
        return override


def serving_limits(meta: dict[str, Any] | None) -> ServingLimits:
    """The release's serving limits: the ``serving`` record ship wrote, else derived from the input specs and sweep."""
    meta = meta or {}
    rec = meta.get(SERVING_KEY)
    if isinstance(rec, dict) and "max_batch" in rec:
        return ServingLimits.from_dict(rec)
    return derive_limits(meta.get("inputs") or [], meta.get("verified_dims") or [])


def derive_limits(inputs: list[Any], verified_dims: list[Any]) -> ServingLimits:
    """Limits from ``TensorSpec.to_dict()`` records and the sweep's verified dim assignments."""
    records = [r for r in inputs if isinstance(r, dict)]
    if not records:
        return ServingLimits(None, None, "none", why_not="the metadata records no input specs")
    firsts = []
    for r in records:
        dims = r.get("dims") or []
        firsts.append(dims[0] if dims and isinstance(dims[0], dict) else None)
    first = firsts[0]
    batch = first.get("name") if first else None
    if not batch:
        return ServingLimits(
            None, None, "none", why_not=f"input {records[0].get('name')!r} has no dynamic axis 0"
        )
    for r, d in zip(records, firsts, strict=True):
        if not d or d.get("name") != batch:
            return ServingLimits(
                None,
                None,
                "none",
                why_not=f"input {r.get('name')!r} does not start with the dynamic dim {batch!r}",
            )
    declared_values = [d.get("max") for d in firsts if d and isinstance(d.get("max"), int)]
    declared = min(declared_values) if declared_values else None
    verified_values = [
        int(p[batch])
        for p in verified_dims
        if isinstance(p, dict) and isinstance(p.get(batch), int) and not isinstance(p.get(batch), bool)
    ]
    if declared is not None:
        verified_values = [v for v in verified_values if v <= declared]
    verified = max(verified_values) if verified_values else None
    if declared is not None and (verified is None or verified >= declared):
        return ServingLimits(batch, declared, "declared", declared=declared, verified=verified)
    if verified is not None:
        return ServingLimits(batch, verified, "verified", declared=declared, verified=verified)
    return ServingLimits(batch, None, "none", declared=declared)
