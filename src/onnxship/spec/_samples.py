"""Sample data drawn from input specs: the memory check on a spec's largest sample and the feeds for one point of
the dims (values from ``onnxship.spec._values``).
"""

from __future__ import annotations

import numpy as np

from onnxship._errors import InputSpecError
from onnxship.spec._dims import dim_table, resolve_specs
from onnxship.spec._tensors import DTYPES, TensorSpec


def _memory_bytes() -> int:
    try:
        import os

        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 64 * 2**30


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} B"


def check_sample_size(spec: TensorSpec, whole: str | None = None) -> None:
    """Refuse dims whose largest sample (dynamic dims at their max, or 2N+1 without one, as the shape sweep uses
    them) would not fit in half this machine's memory: checked before anything is allocated."""
    shape = [
        d.value if d.name is None else (d.max if d.max is not None else 2 * d.value + 1) for d in spec.dims
    ]
    elements = 1
    for v in shape:
        elements *= max(int(v), 0)
    size = elements * np.dtype(DTYPES.get(spec.dtype, "float32")).itemsize
    limit = _memory_bytes() // 2
    if size > limit:
        where = f"input spec {whole!r}" if whole else f"input {spec.name!r}"
        raise InputSpecError(
            f"{where}: the largest sample {'x'.join(map(str, shape))} {spec.dtype} needs {_human(size)}, more "
            f"than half of this machine's {_human(limit * 2)} of memory",
            hint="use smaller dims (the sample value N and the ..MAX of dynamic dims)",
        )


def _default_bounds(spec: TensorSpec) -> tuple[float, float]:
    from onnxship.spec._values import default_bounds

    return default_bounds(spec)


def sample_feeds(
    specs: list[TensorSpec] | tuple[TensorSpec, ...],
    values: dict[str, int] | None = None,
    *,
    seed: int = 0,
    use_samples: bool = True,
) -> dict[str, np.ndarray]:
    """Inputs that follow the specs at the given dim values (default: the export values).

    Values follow each input's kind (``mask``: prefix masks, ``offsets``: valid bag offsets, ...). Where an input
    carries the user's sample tensor (``spec.meta["sample"]``) and the shape is the sample's, the sample is used as
    given (``use_samples=False``: always generated, e.g. to test whether generated values are valid).
    """
    from onnxship.spec._values import generate

    rng = np.random.default_rng(seed)
    specs = resolve_specs(specs)
    table = dim_table(specs)
    given = dict(values or {})
    sizes = {n: int(given.get(n, d.value)) for n, d in table.items() if not d.parts} | given
    for n, d in table.items():
        if d.parts and n not in given:
            sizes[n] = sum(sizes[p] for p in d.parts) + d.offset
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = spec.shape_for(sizes)
        sample = spec.meta.get("sample") if use_samples else None
        if sample is not None and tuple(np.shape(sample)) == shape:
            feeds[spec.name] = np.array(sample, dtype=np.dtype(DTYPES[spec.dtype]), copy=True)
            continue
        feeds[spec.name] = generate(spec, shape, sizes, rng)
    return feeds
