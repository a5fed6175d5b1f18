"""Triton's ``ModelConfig`` message for a model: the config/tensor/result types, building the protobuf message,
printing it with protobuf's text format, parsing it back and the checks Triton would make at load time.

DO NOT import tritonclient at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxship._errors import ConfigError, MissingDependencyError, PackagingError

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
