"""Which nodes hurt most when quantized: quantize one node at a time, measure the output error, rank.

Used when an INT8 variant fails its gate: the most sensitive nodes are kept in float32 (1, 2, 4, ... of them) until
the gate passes, and the report names them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxship import _progress
from onnxship.optimize._passes import QUANTIZABLE_OP_TYPES, Pass, name_unnamed_nodes

if TYPE_CHECKING:
    import onnx

__all__ = ["NodeSensitivity", "quantizable_nodes", "rank_sensitivity"]


@dataclass(frozen=True)
class NodeSensitivity:
    """Output error when only this node is quantized."""

    name: str
    op_type: str
    mse: float  # mean squared error of the outputs against float32, over the probe batches

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op_type": self.op_type, "mse": self.mse}


def quantizable_nodes(model: onnx.ModelProto, limit: int = 48) -> list[tuple[str, str]]:
    """(name, op_type) of nodes a quantizer would touch that carry weights, largest weights first, at most ``limit``."""
    import numpy as np

    name_unnamed_nodes(model)
    sizes = {init.name: int(np.prod(init.dims)) if len(init.dims) else 1 for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in QUANTIZABLE_OP_TYPES:
            continue
        weight = sum(sizes.get(i, 0) for i in node.input)
        if weight:
            found.append((weight, node.name, node.op_type))
    found.sort(key=lambda t: -t[0])
    return [(n, op) for _, n, op in found[:limit]]


def rank_sensitivity(
    model: onnx.ModelProto,
    make_pass: Callable[[list[str]], Pass],
    probes: Sequence[dict[str, np.ndarray]],
    *,
    limit: int = 48,
) -> list[NodeSensitivity]:
    """Quantize each candidate node alone (``make_pass([node])``) and rank by output MSE against float32."""
    from onnxship.runtime._session import SessionConfig, create_session

    cfg = SessionConfig(providers=("cpu",))
    base = create_session(model.SerializeToString(), cfg)
    refs = [base.run(None, feeds) for feeds in probes]
    ranked = []
    nodes = quantizable_nodes(model, limit)
    shown = _progress.begin("int8: node sensitivity", total=len(nodes))
    for name, op in nodes:
        shown.advance(detail=name)
        q = make_pass([name])(model).model
        sess = create_session(q.SerializeToString(), cfg)
        errs = []
        for feeds, ref in zip(probes, refs, strict=True):
            got = sess.run(None, feeds)
            errs.extend(
                float(np.mean((np.asarray(g, np.float64) - np.asarray(r, np.float64)) ** 2))
                for r, g in zip(ref, got, strict=True)
                if np.issubdtype(np.asarray(r).dtype, np.floating)
            )
        ranked.append(NodeSensitivity(name, op, float(np.mean(errs)) if errs else 0.0))
    shown.close()
    ranked.sort(key=lambda s: -s.mse)
    return ranked
