"""The server never reads outside its model root: start-up, MODEL_PATH, latest, LATEST, /reload and every file a
model is built from (model, sidecar, golden, external data, manifest entries) are resolved, confined and opened by
descriptor, so what is checked is what is loaded. Responses never show absolute paths."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ..serve.conftest import ONNXSHIP, _deeplog, infer_body, torch_outputs, write_bundle  # noqa: TID252

X = np.random.default_rng(3).integers(0, 30, size=(2, 12)).astype(np.int64)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """releases/deeplog/<inside> (latest) and outside/<other> (another model's valid release, outside the root)."""
    base = tmp_path_factory.mktemp("confine")
    root = base / "releases"
    inside = write_bundle(root, 0, 1, latest=True)
    other = write_bundle(base / "elsewhere", 1, 2)
    outside = base / "outside"
    shutil.copytree(other, outside / other.name)
    return base, root, inside, outside / other.name


def _serve_exits(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "ONNXSHIP_TOKEN")}
    full.update(env or {})
    return subprocess.run(
        [ONNXSHIP, "serve", "--port", "0", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _clone(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.mark.parametrize("pointer", ["LATEST-relative", "LATEST-absolute", "latest-symlink"])
def test_startup_pointer_leaving_the_root_is_refused(tree, tmp_path, pointer):
    """No `latest` link and a LATEST file (or a `latest` link) naming a release outside the root: nothing served."""
    base, _, _, outside = tree
    root = tmp_path / "releases"
    name_dir = root / "deeplog"
    name_dir.mkdir(parents=True)
    if pointer == "LATEST-relative":
        (name_dir / "LATEST").write_text(os.path.relpath(outside, name_dir) + "\n")
    elif pointer == "LATEST-absolute":
        (name_dir / "LATEST").write_text(str(outside) + "\n")
    else:
        (name_dir / "latest").symlink_to(outside)
    out = _serve_exits(["--releases", str(root)], tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "http://" not in out.stdout
    assert re.search(r"outside the model root|not a plain file or folder name", out.stderr), out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def rooted(tree, tmp_path_factory, start_server):
    """A server with --model-root ROOT; tests plant releases below ROOT and files outside it."""
    _, _, inside, _ = tree
    base = tmp_path_factory.mktemp("rooted")
    root = base / "root"
    good = _clone(inside, root / "releases" / "deeplog" / inside.name)
    (good.parent / "latest").symlink_to(inside.name)
    server = start_server(["--releases", str(root / "releases"), "--model-root", str(root)])
    return server, base, root


@pytest.mark.parametrize("planted", ["deeplog.onnx", "golden.npz", "deeplog.onnx.meta.json", "release.json"])
def test_release_with_a_file_symlinked_outside_is_refused(tree, rooted, planted):
    """A release folder inside the root whose files are symlinks to (identical) files outside it."""
    _, _, inside, _ = tree
    server, base, root = rooted
    release = _clone(inside, root / f"planted-{planted}" / "deeplog" / inside.name)
    outside_copy = base / f"outside-{planted}" / planted
    outside_copy.parent.mkdir()
    shutil.copyfile(release / planted, outside_copy)
    (release / planted).unlink()
    (release / planted).symlink_to(outside_copy)
    (release.parent / "latest").symlink_to(inside.name)
    # at start-up: MODEL_PATH and latest both lead to it
    out = _serve_exits(["--releases", str(release.parent.parent)], base, env={"MODEL_PATH": str(release)})
    assert out.returncode == 1 and "outside the model root" in out.stderr, out.stdout + out.stderr
    # through /reload
    status, doc = server.json("POST", "/reload", {"model_path": f"planted-{planted}/deeplog/{inside.name}"})
    assert status == 403 and "outside the model root" in doc["error"], doc
    assert str(base) not in json.dumps(doc)


def test_manifest_entry_leaving_the_root_is_refused(tree, rooted):
    import hashlib

    _, _, inside, outside = tree
    server, base, root = rooted
    release = _clone(inside, root / "listed" / "deeplog" / inside.name)
    manifest = json.loads((release / "release.json").read_text())
    secret = outside / "deeplog.onnx"
    manifest["files"][os.path.relpath(secret, release)] = hashlib.sha256(secret.read_bytes()).hexdigest()
    (release / "release.json").write_text(json.dumps(manifest))
    status, doc = server.json("POST", "/reload", {"model_path": f"listed/deeplog/{inside.name}"})
    assert status == 403 and "outside the model root" in doc["error"], doc


def test_model_path_outside_the_root_falls_back_and_says_why(tree, start_server, tmp_path):
    base, root, inside, outside = tree
    server = start_server(["--releases", str(root)], env={"MODEL_PATH": str(outside)})
    _, doc = server.json("GET", "/version")
    assert doc["release"] == inside.name, doc
    first = doc["selection"][0]
    assert first["source"] == "MODEL_PATH" and not first["ok"] and "outside the model root" in first["reason"]
    assert str(base) not in json.dumps(doc)


# -- external data in subgraphs and function bodies -----------------------------------------------------------


def _model_with_external(where: str, location: str) -> onnx.ModelProto:
    """y = x + C, where C is an external tensor held in the main graph, an If branch, or a function body."""
    const = numpy_helper.from_array(np.full((1, 4), 2.0, np.float32), "C")
    const.ClearField("raw_data")
    const.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = const.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    opsets = [helper.make_opsetid("", 17)]
    if where == "graph":
        graph = helper.make_graph([helper.make_node("Add", ["x", "C"], ["y"])], "g", [x], [y], [const])
        return helper.make_model(graph, opset_imports=opsets)
    if where == "if":
        branch = helper.make_graph(
            [
                helper.make_node("Constant", [], ["c"], value=const),
                helper.make_node("Add", ["x", "c"], ["yb"]),
            ],
            "branch",
            [],
            [helper.make_tensor_value_info("yb", TensorProto.FLOAT, [1, 4])],
        )
        plain = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["yp"])],
            "plain",
            [],
            [helper.make_tensor_value_info("yp", TensorProto.FLOAT, [1, 4])],
        )
        cond = numpy_helper.from_array(np.array(True), "cond")
        graph = helper.make_graph(
            [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=plain)],
            "g",
            [x],
            [y],
            [cond],
        )
        return helper.make_model(graph, opset_imports=opsets)
    func = helper.make_function(
        "local",
        "AddConst",
        ["a"],
        ["b"],
        [helper.make_node("Constant", [], ["k"], value=const), helper.make_node("Add", ["a", "k"], ["b"])],
        opsets,
    )
    graph = helper.make_graph([helper.make_node("AddConst", ["x"], ["y"], domain="local")], "g", [x], [y])
    return helper.make_model(
        graph, opset_imports=[*opsets, helper.make_opsetid("local", 1)], functions=[func]
    )


@pytest.mark.parametrize("where", ["graph", "if", "function"])
def test_external_data_locations_cover_subgraphs_and_functions(where, tmp_path):
    from onnxship._errors import CheckError
    from onnxship.onnxfile import external_data_files, external_data_locations

    model = _model_with_external(where, "../secret.bin")
    with pytest.raises(CheckError, match="leaves the model folder"):
        external_data_locations(model)
    ok = _model_with_external(where, "weights.bin")
    assert external_data_locations(ok) == [("C", "weights.bin")]
    folder = tmp_path / where
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(np.full(4, 7.0, np.float32).tobytes())
    (folder / "weights.bin").symlink_to(tmp_path / "secret.bin")  # a symlink out of the model folder
    onnx.save_model(ok, str(folder / "m.onnx"))
    with pytest.raises(CheckError, match="resolves outside the model folder"):
        external_data_files(folder / "m.onnx")


@pytest.fixture(scope="module")
def bare_server(tree, tmp_path_factory, start_server):
    """A server whose model root holds bare .onnx models (served with --no-golden-check)."""
    base = tmp_path_factory.mktemp("bare")
    root = base / "models"
    good = root / "good"
    good.mkdir(parents=True)
    onnx.save_model(_model_with_external("graph", "weights.bin"), str(good / "m.onnx"))
    (good / "weights.bin").write_bytes(np.full(4, 2.0, np.float32).tobytes())
    (base / "secret.bin").write_bytes(np.full(4, 7.0, np.float32).tobytes())
    for where in ("graph", "if", "function"):
        d = root / f"climb-{where}"
        d.mkdir()
        onnx.save_model(_model_with_external(where, "../../secret.bin"), str(d / "m.onnx"))
        d = root / f"link-{where}"
        d.mkdir()
        onnx.save_model(_model_with_external(where, "weights.bin"), str(d / "m.onnx"))
        (d / "weights.bin").symlink_to(base / "secret.bin")
    server = start_server(
        ["--model-path", str(good / "m.onnx"), "--model-root", str(root), "--no-golden-check"]
    )
    return server, base


def _x_infer(server) -> list[float]:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}
    status, doc = server.json("POST", "/v2/models/m/infer", body)
    assert status == 200, doc
    return doc["outputs"][0]["data"]


@pytest.mark.parametrize("where", ["graph", "if", "function"])
@pytest.mark.parametrize("kind", ["climb", "link"])
def test_reload_external_data_outside_is_refused(bare_server, where, kind):
    server, base = bare_server
    assert _x_infer(server) == [3.0] * 4  # x + 2 from the model's own weights.bin
    status, doc = server.json("POST", "/reload", {"model_path": f"{kind}-{where}/m.onnx"})
    assert status in (403, 422), doc
    assert re.search(r"outside the model (root|folder)|leaves the model folder", doc["error"]), doc
    assert str(base) not in json.dumps(doc)
    assert _x_infer(server) == [3.0] * 4  # never x + 7 from the secret outside


def test_external_data_served_from_what_was_checked(bare_server, tmp_path):
    """onnxruntime gets the external data from memory: a working-folder file of the same name is never read."""
    server, _ = bare_server
    status, doc = server.json("POST", "/reload", {"model_path": "good/m.onnx"})
    assert status == 200, doc
    assert _x_infer(server) == [3.0] * 4


# -- check-then-use ------------------------------------------------------------------------------------------


def test_opened_path_is_the_checked_path(tmp_path):
    """A folder swapped for a symlink after the path was resolved is not followed when the file is opened."""
    from onnxship.serve._files import ModelRoot

    root = tmp_path / "root"
    (root / "rel").mkdir(parents=True)
    (root / "rel" / "f.bin").write_bytes(b"inside")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f.bin").write_bytes(b"outside")
    files = ModelRoot(root)
    real = files.resolve("rel/f.bin")
    assert files.read(real, "file") == b"inside"
    (root / "rel").rename(root / "rel-old")
    (root / "rel").symlink_to(tmp_path / "out")  # the swap, between resolve() and the open
    with pytest.raises(Exception, match="changed while it was opened") as info:
        files.open_resolved(real, "file")
    assert getattr(info.value, "status", None) == 403
    with pytest.raises(Exception, match="outside the model root"):
        files.read("rel/f.bin", "file")


def test_reload_racing_a_folder_swap_never_serves_the_outside_model(tree, tmp_path, start_server):
    """A thread swaps releases/deeplog/swap between a real release folder and a symlink to an outside release
    while /reload is retried: every reload that succeeds serves the inside model."""
    _, _, inside, outside = tree
    root = tmp_path / "releases"
    real_copy = _clone(inside, root / "deeplog" / "swap")
    (root / "deeplog" / "latest").symlink_to("swap")
    server = start_server(["--releases", str(root)])
    link = root / "deeplog" / "swap-link"
    parked = root / "deeplog" / "swap-real"
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            os.rename(real_copy, parked)
            os.symlink(outside, link)
            os.rename(link, real_copy)  # now a symlink to the outside release
            os.rename(real_copy, link)
            os.rename(parked, real_copy)  # back to the real folder
            os.unlink(link)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    want_inside = torch_outputs(_deeplog(0), {"input_sequence": X})["output_0"]
    served = refused = 0
    try:
        for _ in range(40):
            status, doc = server.json("POST", "/reload", {"model_path": "deeplog/swap"})
            assert status in (200, 403, 404, 422), doc
            if status != 200:
                refused += 1
                continue
            served += 1
            code, out = server.json("POST", "/v2/models/deeplog/infer", infer_body(X))
            assert code == 200
            got = np.asarray(out["outputs"][0]["data"], np.float32).reshape(want_inside.shape)
            np.testing.assert_allclose(got, want_inside, atol=1e-4, err_msg="the outside model was served")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert served + refused == 40, (served, refused)


# -- no absolute paths in responses ---------------------------------------------------------------------------


def test_version_and_errors_show_no_absolute_paths(tree, start_server, tmp_path):
    base, root, inside, outside = tree
    (tmp_path / ".env").write_text(f"MODEL_PATH={tmp_path / 'gone'}\n")
    server = start_server(["--releases", str(root)], cwd=tmp_path)
    bodies = []
    for path in (str(outside), str(tmp_path / "gone"), "/etc/passwd", "deeplog/none", "../..", str(inside)):
        bodies.append(server.request("POST", "/reload", json.dumps({"model_path": path}).encode())[2])
    bodies.append(server.request("GET", "/version")[2])
    bodies.append(server.request("GET", "/v2/models/deeplog")[2])
    for raw in bodies:
        text = raw.decode()
        for secret in (str(base), str(tmp_path), str(Path.home()), sys.prefix, "/etc/passwd"):
            assert secret not in text, text
    doc = json.loads(bodies[-2])
    assert doc["model_root"] == "releases" and doc["source"] == f"deeplog/{inside.name}/deeplog.onnx"
    assert doc["last_reload"]["model_path"] == f"deeplog/{inside.name}"


def test_relative_flags_are_relative_to_the_working_folder(tree, start_server):
    """--releases and MODEL_PATH as typed in a shell (relative to the working folder), /reload relative to the root."""
    base, root, inside, _ = tree
    rel = f"releases/deeplog/{inside.name}"
    server = start_server(["--releases", "releases"], env={"MODEL_PATH": rel}, cwd=base)
    _, doc = server.json("GET", "/version")
    assert doc["selection"][0] == {
        "source": "MODEL_PATH",
        "ok": True,
        "path": f"deeplog/{inside.name}/deeplog.onnx",
    }
    status, doc = server.json("POST", "/reload", {"model_path": f"deeplog/{inside.name}"})
    assert status == 200, doc
    only_model_path = start_server([], env={"MODEL_PATH": rel}, cwd=base)
    assert only_model_path.json("GET", "/version")[1]["release"] == inside.name


def test_release_with_external_data_is_served_from_what_was_hashed(tree, rooted):
    """A release whose weights live in an external data file listed in release.json: onnxruntime gets the bytes
    that were hashed, never a same-named file it could find by itself (here: a decoy in the server's working
    folder, where onnxruntime resolves locations of a model given as bytes)."""
    import hashlib

    _, _, inside, _ = tree
    server, _, root = rooted
    release = _clone(inside, root / "external" / "deeplog" / inside.name)
    model = onnx.load(str(release / "deeplog.onnx"))
    onnx.save_model(
        model,
        str(release / "deeplog.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="deeplog.onnx.data",
        size_threshold=0,
    )
    data = (release / "deeplog.onnx.data").read_bytes()
    decoy = server.log.parent / "deeplog.onnx.data"
    decoy.write_bytes(bytes(len(data)))  # zeros: a model with these weights fails its golden check
    sha = hashlib.sha256((release / "deeplog.onnx").read_bytes()).hexdigest()
    meta = json.loads((release / "deeplog.onnx.meta.json").read_text())
    meta["onnx_sha256"] = sha
    (release / "deeplog.onnx.meta.json").write_text(json.dumps(meta))
    manifest = json.loads((release / "release.json").read_text())
    manifest["files"]["deeplog.onnx"] = sha
    manifest["files"]["deeplog.onnx.meta.json"] = hashlib.sha256(
        (release / "deeplog.onnx.meta.json").read_bytes()
    ).hexdigest()
    manifest["files"]["deeplog.onnx.data"] = hashlib.sha256(data).hexdigest()
    (release / "release.json").write_text(json.dumps(manifest))
    status, doc = server.json("POST", "/reload", {"model_path": f"external/deeplog/{inside.name}"})
    assert status == 200 and doc["golden"]["status"] == "passed", doc
    code, out = server.json("POST", "/v2/models/deeplog/infer", infer_body(X))
    want = torch_outputs(_deeplog(0), {"input_sequence": X})["output_0"]
    np.testing.assert_allclose(
        np.asarray(out["outputs"][0]["data"], np.float32).reshape(want.shape), want, atol=1e-4
    )
    # the data file changed after release: refused by its hash, before onnxruntime sees it
    (release / "deeplog.onnx.data").write_bytes(bytes(len(data)))
    status, doc = server.json("POST", "/reload", {"model_path": f"external/deeplog/{inside.name}"})
    assert status == 422 and "sha256 of deeplog.onnx.data" in doc["error"], doc


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("cannot read /tmp/x/releases/deeplog/v1/deeplog.onnx (EIO)", "cannot read <path> (EIO)"),
        ("model path '/etc/passwd' is outside", "model path '<path>' is outside"),
        ("no route '/v2/models/x/infer'", "no route '/v2/models/x/infer'"),  # URL paths stay
        ("see releases/<name>/latest", "see releases/<name>/latest"),  # relative paths stay
        ("onnxruntime: file /home/u/m.onnx.data, size 3", "onnxruntime: file <path>, size 3"),
    ],
)
def test_redact_paths(text, shown):
    from onnxship.serve._files import redact_paths

    assert redact_paths(text) == shown


def test_paths_are_shown_relative_to_the_root(tmp_path):
    from onnxship.serve._files import ModelRoot

    root = tmp_path / "releases"
    (root / "deeplog").mkdir(parents=True)
    (tmp_path / "link").symlink_to(root)
    files = ModelRoot(tmp_path / "link")  # the root itself is resolved once
    assert files.show(root / "deeplog" / "x.onnx") == "deeplog/x.onnx"
    assert files.show(tmp_path / "link" / "deeplog") == "deeplog"
    assert files.show(root) == "."
    assert files.show("/etc/passwd") == "…/passwd"
    assert files.show("deeplog/v1") == "deeplog/v1"


@pytest.mark.parametrize("bare", [False, True])
def test_malformed_sidecar_dims_are_a_422_not_a_traceback(tree, rooted, bare):
    import hashlib

    _, _, inside, _ = tree
    server, _, root = rooted
    release = _clone(inside, root / f"baddims-{bare}" / "deeplog" / inside.name)
    meta = json.loads((release / "deeplog.onnx.meta.json").read_text())
    meta["inputs"][0]["dims"][1]["max"] = "thirty-two"
    (release / "deeplog.onnx.meta.json").write_text(json.dumps(meta))
    if bare:
        (release / "release.json").unlink()
        target = f"baddims-{bare}/deeplog/{inside.name}/deeplog.onnx"
    else:
        manifest = json.loads((release / "release.json").read_text())
        manifest["files"]["deeplog.onnx.meta.json"] = hashlib.sha256(
            (release / "deeplog.onnx.meta.json").read_bytes()
        ).hexdigest()
        (release / "release.json").write_text(json.dumps(manifest))
        target = f"baddims-{bare}/deeplog/{inside.name}"
    status, doc = server.json("POST", "/reload", {"model_path": target})
    assert status == 422 and ("meta.json" in doc["error"] or "sidecar" in doc["error"]), doc
    assert server.request("GET", "/v2/health/ready")[0] == 200
