"""The Triton io signature of a release: inputs, outputs and max_batch_size from its verified input specs, the
output declarations the export corrected against the shape sweep, and the golden outputs.

The ONNX file's declared shapes are not trusted on their own (the dynamo exporter declares wrong output dims, see
EXPORTER-NOTES.md).
"""

from __future__ import annotations

from onnxship._errors import PackagingError
from onnxship.package._limits import serving_limits
from onnxship.package._release import Release
from onnxship.package._triton_config import _UNSUPPORTED, TRITON_DTYPES, TritonTensor, _tensor


def _dtype(name: str, dtype: str, release: Release) -> str:
    if dtype in _UNSUPPORTED:
        raise PackagingError(
            f"release {release.version}: {name!r} is {dtype}: {_UNSUPPORTED[dtype]}",
            hint="cast that input/output to float16 or float32 inside the model and re-ship",
        )
    if dtype not in TRITON_DTYPES:
        raise PackagingError(
            f"release {release.version}: {name!r} has dtype {dtype!r} with no Triton mapping",
            hint=f"supported: {', '.join(TRITON_DTYPES)}",
        )
    return TRITON_DTYPES[dtype]


def triton_signature(
    release: Release, max_batch_size: int | None = None
) -> tuple[int, list[TritonTensor], list[TritonTensor], list[str]]:
    """Inputs/outputs and max_batch_size for a release, from its verified io signature."""
    import onnx

    from onnxship.onnxfile import declared_io
    from onnxship.spec._inputs import TensorSpec

    graph = declared_io(onnx.load(str(release.model_path), load_external_data=False))
    specs = [TensorSpec.from_dict(d) for d in release.meta.get("inputs", [])]
    if sorted(s.name for s in specs) != sorted(v["name"] for v in graph["inputs"]):
        raise PackagingError(
            f"release {release.version}: the verified inputs {[s.name for s in specs]} do not match "
            f"the model's inputs {[v['name'] for v in graph['inputs']]}",
            hint="the metadata sidecar does not describe this model; re-ship it",
        )
    by_name = {s.name: s for s in specs}
    notes: list[str] = []
    golden_shapes: dict[str, tuple[int, ...]] = {}
    if release.golden_path is not None:
        from onnxship.runtime._golden import read_golden

        golden_shapes = {k: v.shape for k, v in read_golden(release.golden_path).outputs.items()}
    # The batch dim: axis 0 of every input shares one dynamic name, and every output follows it.
    first = specs[0].dims[0] if specs and specs[0].dims else None
    batch = first.name if first is not None and first.dynamic else None
    why_not: str | None = None
    if batch is None:
        why_not = f"input {specs[0].name!r} has no dynamic axis 0" if specs else "the model has no inputs"
    for s in specs:
        if batch and (not s.dims or s.dims[0].name != batch):
            why_not = f"input {s.name!r} does not start with the dynamic dim {batch!r}"
    for o in graph["outputs"]:
        if batch and (not o["shape"] or o["shape"][0] != batch):
            why_not = (
                f"output {o['name']!r} axis 0 is {o['shape'][0] if o['shape'] else 'missing'!r}, not the "
                f"batch dim {batch!r} (verified against the shape sweep)"
            )
    limits = serving_limits(release.meta)  # the release's largest batch: one source for every consumer
    if max_batch_size is None:
        mbs = int(limits.max_batch) if why_not is None and limits.max_batch else 0
        if why_not:
            notes.append(f"batching disabled: {why_not}")
        elif not mbs:
            notes.append(
                "batching disabled: the release records no verified batch maximum "
                "(pass --max-batch-size N, or declare the batch dim's range and ship again)"
            )
    else:
        mbs = int(
            limits.resolve(max_batch_size, "--max-batch-size", zero_disables=True, error=PackagingError) or 0
        )
        if mbs > 0 and why_not:
            raise PackagingError(
                f"release {release.version} cannot be batched by Triton: {why_not}",
                hint="use --max-batch-size 0 (dims are then the full shapes)",
            )
    skip = 1 if mbs > 0 else 0
    inputs: list[TritonTensor] = []
    for v in graph["inputs"]:
        spec = by_name[v["name"]]
        dims = [-1 if d.dynamic else int(d.value) for d in spec.dims[skip:]]
        inputs.append(_tensor(v["name"], _dtype(v["name"], v["dtype"], release), dims))
    outputs: list[TritonTensor] = []
    for o in graph["outputs"]:
        shape = o["shape"]
        gold = golden_shapes.get(o["name"])
        if not shape and gold is not None:
            shape = [None] * len(gold)
            notes.append(
                f"output {o['name']!r} has no declared shape; rank {len(gold)} taken from golden.npz"
            )
        if gold is not None:
            if len(gold) != len(shape):
                raise PackagingError(
                    f"release {release.version}: output {o['name']!r} is declared rank {len(shape)} "
                    f"but golden.npz holds rank {len(gold)}",
                    hint="re-ship the model",
                )
            for axis, (d, g) in enumerate(zip(shape, gold, strict=True)):
                if isinstance(d, int) and d != g:
                    raise PackagingError(
                        f"release {release.version}: output {o['name']!r} axis {axis} is declared "
                        f"{d} but PyTorch returned {g}",
                        hint="re-ship the model",
                    )
        dims = [int(d) if isinstance(d, int) else -1 for d in shape[skip:]]
        outputs.append(_tensor(o["name"], _dtype(o["name"], o["dtype"], release), dims))
    return mbs, inputs, outputs, notes
