"""Property-based fuzzing (hypothesis, bounded and seeded): the input-spec parser and the v2 request decoder
refuse every malformed input with their own error type and never with another exception."""

from __future__ import annotations

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from onnxship._errors import InputSpecError  # noqa: E402
from onnxship.spec import parse_input_spec  # noqa: E402

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# Fragments of the grammar NAME:DIMS:DTYPE[:LOW..HIGH], so most examples get past the first check.
_FRAGMENTS = st.sampled_from(
    [
        "x",
        "input_sequence",
        "batch",
        "seq",
        "=",
        "..",
        ":",
        " x ",
        "x",
        "1",
        "0",
        "-1",
        "2",
        "64",
        "1e30",
        "-1e30",
        "nan",
        "inf",
        "0.5",
        "int64",
        "int8",
        "uint8",
        "float16",
        "float32",
        "bool",
        "bfloat16",
        "complex",
        " ",
        "",
        "batch=2",
        "seq=10..64",
        "=3",
        "9" * 30,
        "１",
        "\x00",
        "é",
        "..1",
        "1..",
        "2..1",
        "3x224x224",
    ]
)
_SPECS = st.one_of(st.text(max_size=40), st.lists(_FRAGMENTS, max_size=12).map("".join))


@SETTINGS
@seed(0)
@given(_SPECS)
def test_input_spec_parser_raises_only_input_spec_error(text):
    try:
        spec = parse_input_spec(text)
    except InputSpecError as exc:
        assert exc.message  # a message to show, never empty
        return
    assert spec.name and spec.dims is not None  # what parses is a usable spec


def _decoder():
    from onnxship.serve._protocol import parse_infer_request
    from onnxship.serve._signature import RequestError

    return parse_infer_request, RequestError


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
_DATATYPES = st.sampled_from(
    ["INT64", "INT32", "INT8", "UINT8", "FP32", "FP16", "FP64", "BOOL", "BYTES", "BF16", "int64", "", "FP8"]
)
_TENSOR = st.fixed_dictionaries(
    {
        "name": st.one_of(st.just("input_sequence"), st.text(max_size=6), st.integers()),
        "shape": st.one_of(
            st.lists(st.integers(-2, 6), max_size=4), st.lists(st.integers(), max_size=3), _JSON
        ),
        "datatype": st.one_of(_DATATYPES, _JSON),
    },
    optional={
        "data": st.one_of(
            st.lists(st.integers(), max_size=12),
            st.lists(st.floats(), max_size=12),
            st.lists(st.lists(st.integers(-3, 3), max_size=3), max_size=3),
            _JSON,
        ),
        "parameters": st.one_of(st.fixed_dictionaries({"binary_data_size": st.integers(-1, 64)}), _JSON),
    },
)
_BODIES = st.one_of(
    st.fixed_dictionaries(
        {"inputs": st.lists(_TENSOR, max_size=3)},
        optional={"outputs": _JSON, "parameters": _JSON, "id": _JSON},
    ),
    _JSON,
)


@SETTINGS
@seed(1)
@given(_BODIES, st.binary(max_size=64), st.one_of(st.none(), st.integers(-4, 4096)), st.booleans())
def test_v2_decoder_raises_only_request_errors(obj, tail, header_length, as_binary):
    parse, request_error = _decoder()
    head = json.dumps(obj, allow_nan=True).encode()
    body = head + tail if as_binary else head
    length = (len(head) if header_length is None else header_length) if as_binary else header_length
    try:
        request = parse(body, length)
    except request_error as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    assert request.feeds  # a decoded request has at least one input tensor


@SETTINGS
@seed(2)
@given(st.binary(max_size=200), st.one_of(st.none(), st.integers(-4, 300)))
def test_v2_decoder_on_raw_bytes(body, header_length):
    parse, request_error = _decoder()
    try:
        parse(body, header_length)
    except request_error as exc:
        assert 400 <= exc.status < 500
