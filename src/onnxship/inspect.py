"""``onnxship inspect``: what an ONNX file declares, without torch and without running it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxship._errors import CheckError

__all__ = ["InspectResult", "inspect_model", "load_onnx_checked"]


@dataclass
class InspectResult:
    """The declared signature, opsets, metadata, size and hash of an ONNX file."""

    path: Path
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    opsets: dict[str, int]
    producer: str
    ir_version: int
    metadata: dict[str, Any]
    size_bytes: int
    sha256: str
    external_data: list[str] = field(default_factory=list)
    sidecar: Path | None = None
    node_count: int = 0
    parameter_count: int = 0

    @property
    def exporter(self) -> str | None:
        value = self.metadata.get("exporter")
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()},
            "exporter": self.exporter,
        }


def load_onnx_checked(path: str | Path) -> Any:
    """Load an ONNX model proto without external data, with clear errors for missing, truncated or foreign files."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.exists():
        raise CheckError(f"{str(path)!r} does not exist")
    if path.is_dir():
        raise CheckError(f"{str(path)!r} is a folder, not an ONNX file", hint="pass the .onnx file inside it")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise CheckError(
            f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__})",
            hint="the file is truncated or not ONNX; re-export it",
        ) from None
    except Exception as exc:
        raise CheckError(
            f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__}: {exc})"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise CheckError(f"{str(path)!r} holds no graph", hint="the file is empty, truncated or not ONNX")
    return model


def inspect_model(path: str | Path) -> InspectResult:
    """Read an ONNX file's signature and metadata.

    Example:
        >>> info = inspect_model("out/deeplog.onnx")  # doctest: +SKIP
        >>> info.inputs[0]["shape"]  # doctest: +SKIP
        ['batch', 'seq']
    """
    import numpy as np

    from onnxship.onnxfile import declared_io, external_data_files, file_sha256, read_metadata

    path = Path(path)
    model = load_onnx_checked(path)
    ext = external_data_files(path, model)
    missing = [p.name for p in ext if not p.exists()]
    if missing:
        raise CheckError(
            f"{path.name} references external data {missing} that is missing",
            hint="copy the .data file(s) next to the .onnx",
        )
    io = declared_io(model)
    params = 0
    for init in model.graph.initializer:
        params += int(np.prod(init.dims)) if len(init.dims) else 1
    sidecar = path.with_name(path.name + ".meta.json")
    return InspectResult(
        path=path,
        inputs=io["inputs"],
        outputs=io["outputs"],
        opsets={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        ir_version=model.ir_version,
        metadata=read_metadata(model),
        size_bytes=path.stat().st_size + sum(p.stat().st_size for p in ext),
        sha256=file_sha256(path),
        external_data=[p.name for p in ext],
        sidecar=sidecar if sidecar.exists() else None,
        node_count=len(model.graph.node),
        parameter_count=params,
    )
