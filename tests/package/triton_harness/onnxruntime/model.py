"""TEST HARNESS: a Triton Python-based backend named ``onnxruntime`` that runs model.onnx with onnxruntime.

Runs inside tritonserver's Python backend stub (the pytriton venv), not inside onnxship. See ../README.md.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

__all__ = ["TritonPythonModel"]

_ORT_TO_NP = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        model_in = {i.name: i.type for i in self.session.get_inputs()}
        model_out = {o.name: o.type for o in self.session.get_outputs()}
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        if sorted(self.inputs) != sorted(model_in) or not set(self.outputs) <= set(model_out):
            raise pb_utils.TritonModelException(
                f"config inputs {self.inputs} / outputs {self.outputs} do not match the model's "
                f"{sorted(model_in)} / {sorted(model_out)}"
            )
        for section, types in (("input", model_in), ("output", model_out)):
            for t in config[section]:
                want = pb_utils.triton_string_to_numpy(t["data_type"])
                have = _ORT_TO_NP.get(types[t["name"]])
                if have is None or np.dtype(want) != np.dtype(have):
                    raise pb_utils.TritonModelException(
                        f"{t['name']}: config says {t['data_type']}, the model has {types[t['name']]}"
                    )

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
            try:
                outs = self.session.run(self.outputs, feeds)
            except Exception as exc:  # report to the client instead of killing the stub
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor(n, np.ascontiguousarray(o))
                        for n, o in zip(self.outputs, outs, strict=True)
                    ]
                )
            )
        return responses
