"""Triton model repositories generated from a release's verified io signature.

The ONNX file's declared shapes are not trusted on their own (the dynamo exporter declares wrong output dims, see
EXPORTER-NOTES.md): input dims come from the verified input specs in the metadata sidecar, output dims from the
declarations the export corrected against the shape sweep, cross-checked with the golden outputs. Each config is
built as Triton's own ``ModelConfig`` protobuf message (tritonclient), printed with protobuf's text format,
and parsed back and checked before anything is written.

DO NOT import tritonclient at module level.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxship._errors import ConfigError, MissingDependencyError, PackagingError
from onnxship._util import check_name
from onnxship.package._limits import serving_limits
from onnxship.package._release import MANIFEST, Release, list_releases, read_release

__all__ = [
    "TRITON_DTYPES",
    "TritonConfig",
    "TritonResult",
    "TritonTensor",
    "build_config",
    "check_triton",
    "package_triton",
    "parse_triton_config",
    "render_config",
    "triton_signature",
]

# onnx dtype name -> Triton data type. BF16 is deliberately absent: see _UNSUPPORTED.
TRITON_DTYPES: dict[str, str] = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int16": "TYPE_INT16",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "bool": "TYPE_BOOL",
    "string": "TYPE_STRING",
}
_UNSUPPORTED = {
    "bfloat16": "bfloat16 tensors at the model boundary are not mapped for Triton's onnxruntime_onnx platform "
    "(onnxship will not pass them off as FP32)",
}
KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")
PLATFORM = "onnxruntime_onnx"
MODEL_FILENAME = "model.onnx"


@dataclass
class TritonConfig:
    """How to build the repository entry."""

    repo: Path  # the model repository root
    max_batch_size: int | None = None  # None: the verified batch maximum (0 when the model cannot batch)
    instances: int = 1  # instance_group count
    kind: str = "KIND_CPU"  # KIND_CPU | KIND_GPU | KIND_AUTO
    dynamic_batching: bool = False  # add a dynamic_batching block
    warmup: bool = False  # model_warmup on one golden.npz sample: Triton runs it before the model turns ready
    preferred_batch_sizes: tuple[int, ...] = ()  # dynamic_batching.preferred_batch_size
    max_queue_delay_us: int = 0  # dynamic_batching.max_queue_delay_microseconds
    version_policy: str = "latest:1"  # all | latest:N | specific:1,3
    model_name: str | None = None  # default: the release name

    def __post_init__(self) -> None:
        self.repo = Path(self.repo)
        if self.kind not in KINDS:
            raise ConfigError(f"unknown instance kind {self.kind!r}", hint=f"valid kinds: {', '.join(KINDS)}")
        if self.instances < 1:
            raise ConfigError(f"--instances {self.instances} must be at least 1")
        if self.max_batch_size is not None and self.max_batch_size < 0:
            raise ConfigError(f"--max-batch-size {self.max_batch_size} must be >= 0 (0 disables batching)")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"max queue delay {self.max_queue_delay_us} must be >= 0")
        _policy(self.version_policy)  # validates
        if (self.preferred_batch_sizes or self.max_queue_delay_us) and not self.dynamic_batching:
            raise ConfigError("preferred batch sizes / queue delay need --dynamic-batching")


@dataclass
class TritonTensor:
    """One input or output of the generated config."""

    name: str
    data_type: str
    dims: list[int]
    reshape: list[int] | None = None  # set when a batched tensor has no dims besides the batch dim

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data_type": self.data_type, "dims": self.dims, "reshape": self.reshape}


@dataclass
class TritonResult:
    """What was written."""

    model_name: str
    model_dir: Path
    config_path: Path
    config_text: str
    max_batch_size: int
    inputs: list[TritonTensor]
    outputs: list[TritonTensor]
    versions: dict[int, str] = field(default_factory=dict)  # Triton version -> release version
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_dir": str(self.model_dir),
            "config_path": str(self.config_path),
            "max_batch_size": self.max_batch_size,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "versions": {str(k): v for k, v in self.versions.items()},
            "notes": self.notes,
        }


def _policy(policy: str) -> tuple[str, list[int]]:
    """Parse a version policy: ("all", []), ("latest", [N]) or ("specific", [V1, V2, ...])."""
    kind, _, arg = policy.partition(":")
    if kind == "all" and not arg:
        return "all", []
    if kind == "latest" and arg.isdigit() and int(arg) >= 1:
        return "latest", [int(arg)]
    if kind == "specific" and arg and all(a.strip().isdigit() and int(a) >= 1 for a in arg.split(",")):
        return "specific", [int(a) for a in arg.split(",")]
    raise ConfigError(
        f"version policy {policy!r} is not understood",
        hint="use all, latest:N (e.g. latest:1) or specific:V1,V2 (e.g. specific:1,3)",
    )


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


def _tensor(name: str, data_type: str, dims: list[int]) -> TritonTensor:
    if not dims:  # a batched [batch] tensor: Triton needs non-empty dims
        return TritonTensor(name, data_type, [1], reshape=[])
    return TritonTensor(name, data_type, dims)


def _model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise MissingDependencyError(
            "tritonclient is not installed (needed to write Triton configs)",
            hint="pip install 'onnxship[triton]'",
        ) from None
    return model_config_pb2


def _fill_tensor(msg: Any, t: TritonTensor, pb: Any, label_file: str | None = None) -> None:
    msg.name = t.name
    msg.data_type = pb.DataType.Value(t.data_type)
    msg.dims.extend(t.dims)
    if t.reshape is not None:
        msg.reshape.SetInParent()  # present even when the shape is empty (a batched [batch] tensor)
        msg.reshape.shape.extend(t.reshape)
    if label_file:
        msg.label_filename = label_file


def build_config(
    name: str,
    max_batch_size: int,
    inputs: list[TritonTensor],
    outputs: list[TritonTensor],
    config: TritonConfig,
    label_file: tuple[str, str] | None = None,
    warmup: dict[str, tuple[str, list[int], str]] | None = None,
) -> Any:
    """Triton's ``ModelConfig`` protobuf message for a model.

    ``label_file``: (output name, file name); ``warmup``: input name -> (data type, dims, file under warmup/).
    """
    pb = _model_config_pb2()
    msg = pb.ModelConfig(
        name=name,
        platform=PLATFORM,
        max_batch_size=max_batch_size,
        default_model_filename=MODEL_FILENAME,
    )
    kind, values = _policy(config.version_policy)
    if kind == "all":
        msg.version_policy.all.SetInParent()
    elif kind == "latest":
        msg.version_policy.latest.num_versions = values[0]
    else:
        msg.version_policy.specific.versions.extend(values)
    for t in inputs:
        _fill_tensor(msg.input.add(), t, pb)
    for t in outputs:
        _fill_tensor(
            msg.output.add(), t, pb, label_file[1] if label_file and label_file[0] == t.name else None
        )
    msg.instance_group.add(count=config.instances, kind=pb.ModelInstanceGroup.Kind.Value(config.kind))
    if config.dynamic_batching:
        msg.dynamic_batching.SetInParent()
        msg.dynamic_batching.preferred_batch_size.extend(config.preferred_batch_sizes)
        if config.max_queue_delay_us:
            msg.dynamic_batching.max_queue_delay_microseconds = config.max_queue_delay_us
    if warmup:
        w = msg.model_warmup.add(name="golden", batch_size=1, count=1)
        for input_name, (data_type, dims, file) in warmup.items():
            w.inputs[input_name].data_type = pb.DataType.Value(data_type)
            w.inputs[input_name].dims.extend(dims)
            w.inputs[input_name].input_data_file = file
    return msg


def render_config(
    name: str,
    max_batch_size: int,
    inputs: list[TritonTensor],
    outputs: list[TritonTensor],
    config: TritonConfig,
    label_file: tuple[str, str] | None = None,
    warmup: dict[str, tuple[str, list[int], str]] | None = None,
) -> str:
    """config.pbtxt text: the ``ModelConfig`` message printed by protobuf's text format."""
    from google.protobuf import text_format

    return text_format.MessageToString(
        build_config(name, max_batch_size, inputs, outputs, config, label_file, warmup),
        use_short_repeated_primitives=True,
    )


def parse_triton_config(text: str) -> Any:
    """Parse config.pbtxt text into tritonclient's ModelConfig protobuf (raises PackagingError when it does not)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise MissingDependencyError(
            "tritonclient is not installed (needed to validate Triton configs)",
            hint="pip install 'onnxship[triton]'",
        ) from None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise PackagingError(
            f"the generated config.pbtxt does not parse as Triton's ModelConfig: {exc}",
            hint="this is an onnxship bug; please report it with the release",
        ) from None


def _check_parsed(
    cfg: Any,
    name: str,
    mbs: int,
    inputs: list[TritonTensor],
    outputs: list[TritonTensor],
    config: TritonConfig,
) -> None:
    """Semantic checks Triton would make at load time, on the parsed protobuf."""
    from tritonclient.grpc import model_config_pb2

    problems = []
    if cfg.name != name or cfg.platform != PLATFORM or cfg.max_batch_size != mbs:
        problems.append("name/platform/max_batch_size did not round-trip")
    for want, got in ((inputs, cfg.input), (outputs, cfg.output)):
        if [t.name for t in want] != [g.name for g in got]:
            problems.append(f"tensor names {[t.name for t in want]} did not round-trip")
        for t, g in zip(want, got, strict=False):
            if list(g.dims) != t.dims or model_config_pb2.DataType.Name(g.data_type) != t.data_type:
                problems.append(f"{t.name}: dims/dtype did not round-trip")
            if not g.dims or any(d == 0 or d < -1 for d in g.dims):
                problems.append(f"{t.name}: invalid dims {list(g.dims)}")
    if config.dynamic_batching and mbs == 0:
        problems.append("dynamic_batching needs max_batch_size > 0")
    bad_pref = [b for b in cfg.dynamic_batching.preferred_batch_size if b > mbs]
    if bad_pref:
        problems.append(f"preferred batch sizes {bad_pref} exceed max_batch_size {mbs}")
    if problems:
        raise PackagingError(
            "the generated Triton config is invalid: " + "; ".join(problems),
            hint="with --dynamic-batching pass a --max-batch-size > 0 and preferred sizes <= it",
        )


def _collect(paths: list[str | Path]) -> list[Release]:
    """Releases from bundle paths, ``latest`` links, or ``releases/<name>`` folders (all their versions)."""
    releases: list[Release] = []
    for p in map(Path, paths):
        if p.is_dir() and not p.is_symlink() and not (p / MANIFEST).is_file():
            rows = (
                list_releases(p)
                if any(c.is_dir() and not c.name.startswith(".") for c in p.iterdir())
                else []
            )
            if not rows:
                raise PackagingError(
                    f"{str(p)!r} is not a release (no {MANIFEST}) and holds no releases",
                    hint="pass releases/<name>/<version>, releases/<name>/latest or releases/<name>",
                )
            bad = [r for r in rows if r.error is not None]
            if bad:
                raise PackagingError(
                    f"{str(p)!r}: {bad[0].version} is not a valid release: {bad[0].error}",
                    hint="pass the valid releases one by one, or ship a new release",
                )
            releases.extend(read_release(r.path) for r in rows)
        else:
            releases.append(read_release(p))
    seen: dict[Path, Release] = {}
    for r in releases:
        seen.setdefault(r.path, r)
    return sorted(seen.values(), key=lambda r: (r.created_at, r.version))


def check_triton(release: Release, config: TritonConfig) -> str:
    """Build and validate the config.pbtxt text for one release without writing anything."""
    mbs, ins, outs, _ = triton_signature(release, config.max_batch_size)
    name = config.model_name or release.name
    warm = _warmup(release, mbs, ins) if config.warmup else None
    text = render_config(
        name,
        mbs,
        ins,
        outs,
        config,
        (outs[0].name, "labels.txt") if _labels(release, outs) else None,
        {k: v[0] for k, v in warm.items()} if warm else None,
    )
    _check_parsed(parse_triton_config(text), name, mbs, ins, outs, config)
    return text


def package_triton(releases: list[str | Path] | str | Path, config: TritonConfig) -> TritonResult:
    """Write ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/<N>/model.onnx`` for one or more releases.

    Several releases of one model become versions 1..N (oldest first); they must share one io signature.
    The model folder is built beside its place and swapped in, so a failure leaves the previous one intact.

    Example:
        >>> package_triton("releases/deeplog/latest", TritonConfig(repo=Path("triton_repo"), instances=2))  # doctest: +SKIP
    """
    items = _collect([releases] if isinstance(releases, (str, Path)) else list(releases))
    if not items:
        raise PackagingError("no releases given", hint="pass releases/<name>/latest")
    names = sorted({r.name for r in items})
    if len(names) > 1:
        raise PackagingError(
            f"releases of several models given ({names})",
            hint="package one model per call (each is its own Triton model)",
        )
    name = check_name(config.model_name or names[0], "Triton model name (--name)")  # becomes <repo>/<name>/
    sig = None
    for r in items:
        mbs, ins, outs, notes = triton_signature(r, config.max_batch_size)
        this = (mbs, [t.to_dict() for t in ins], [t.to_dict() for t in outs])
        if sig is not None and this != sig[0]:
            raise PackagingError(
                f"release {r.version} has another io signature than {sig[1]}",
                hint="Triton versions of one model share one config; package them separately "
                "(--name) or ship compatible releases",
            )
        if sig is None:
            sig = (this, r.version, mbs, ins, outs, notes)
    assert sig is not None
    _, _, mbs, ins, outs, notes = sig
    labels = _labels(items[-1], outs)
    warm = _warmup(items[-1], mbs, ins) if config.warmup else None
    if config.warmup and not warm:
        notes.append(f"no warmup: release {items[-1].version} has no golden.npz")
    text = render_config(
        name,
        mbs,
        ins,
        outs,
        config,
        (outs[0].name, "labels.txt") if labels else None,
        {k: v[0] for k, v in warm.items()} if warm else None,
    )
    _check_parsed(parse_triton_config(text), name, mbs, ins, outs, config)
    files = {v[0][2]: v[1] for v in warm.values()} if warm else {}
    return _write_repo(config.repo, name, text, items, labels, mbs, ins, outs, notes, files)


def _warmup(
    release: Release, mbs: int, ins: list[TritonTensor]
) -> dict[str, tuple[tuple[str, list[int], str], bytes]] | None:
    """One golden sample per input as Triton warmup data: name -> ((data type, dims, file), raw bytes)."""
    if release.golden_path is None:
        return None
    from onnxship.runtime._golden import read_golden

    golden = read_golden(release.golden_path).inputs
    out: dict[str, tuple[tuple[str, list[int], str], bytes]] = {}
    for i, t in enumerate(ins):
        if t.name not in golden:
            return None
        arr = golden[t.name]
        sample = arr[0] if mbs > 0 else arr  # batched: one row (batch_size 1); else the whole tensor
        dims = list(sample.shape) if t.reshape is None else [1]
        out[t.name] = ((t.data_type, dims, f"input_{i}"), sample.tobytes(order="C"))
    return out


def _labels(release: Release, outs: list[TritonTensor]) -> list[str] | None:
    path = release.asset("labels")
    if path is None or not outs:
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    labels = [data[str(i)] for i in range(len(data))]
    return labels if outs[0].dims and outs[0].dims[-1] == len(labels) else None


def _write_repo(
    repo: Path,
    name: str,
    text: str,
    items: list[Release],
    labels: list[str] | None,
    mbs: int,
    ins: list[TritonTensor],
    outs: list[TritonTensor],
    notes: list[str],
    warmup_files: dict[str, bytes] | None = None,
) -> TritonResult:
    try:
        repo.mkdir(parents=True, exist_ok=True)
        tmp = repo / f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
    except OSError as exc:
        raise PackagingError(
            f"cannot write the Triton repository {str(repo)!r}: {exc.strerror or exc}",
            hint="pick a writable --repo folder",
        ) from None
    versions: dict[int, str] = {}
    try:
        for i, r in enumerate(items, start=1):
            vdir = tmp / str(i)
            vdir.mkdir()
            shutil.copyfile(r.model_path, vdir / MODEL_FILENAME)
            for data in r.path.glob(r.model_path.name + ".data"):
                shutil.copyfile(data, vdir / data.name)  # the model references it by this name
            versions[i] = r.version
        (tmp / "config.pbtxt").write_text(text, encoding="utf-8")
        if warmup_files:
            (tmp / "warmup").mkdir()
            for fname, data in warmup_files.items():
                (tmp / "warmup" / fname).write_bytes(data)
        if labels:
            (tmp / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        (tmp / "onnxship-versions.json").write_text(
            json.dumps(
                {
                    str(k): {"release": v, "sha256": items[k - 1].meta.get("onnx_sha256")}
                    for k, v in versions.items()
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        final = repo / name
        old = repo / f".{name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TritonResult(
        model_name=name,
        model_dir=final,
        config_path=final / "config.pbtxt",
        config_text=text,
        max_batch_size=mbs,
        inputs=ins,
        outputs=outs,
        versions=versions,
        notes=notes,
    )
