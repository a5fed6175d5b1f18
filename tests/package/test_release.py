"""Release bundles: layout, versioning, latest pointer, immutability, validation, failures that write nothing."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone

import numpy as np
import onnx
import pytest

from onnxship import ConfigError, PackagingError
from onnxship._errors import UsageError
from onnxship.onnxfile import read_metadata
from onnxship.package import (
    AssetSpec,
    ReleaseWriter,
    current_latest,
    list_releases,
    read_release,
    resolve_release,
    version_tag,
)
from onnxship.verify import OnnxRuntimeRunner, read_golden

from .conftest import T1, T2, ship_config, writable_copy, write_vocab


def _tree(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_version_tag_format():
    when = datetime(2025, 8, 10, 14, 30, 12, tzinfo=timezone.utc)
    assert version_tag("model", when, "ab12cd3ef") == "model-20250810-143012-ab12cd3"
    assert version_tag("model", when, "nogit") == "model-20250810-143012-nogit"
    with pytest.raises(PackagingError, match="timezone-aware"):
        version_tag("model", datetime(2025, 1, 1), "nogit")


def test_bundle_layout(shipped):
    releases, r1, r2 = shipped
    assert r1.version.startswith("deeplog-20261101-120000-") and r2.version.startswith(
        "deeplog-20261102-120000-"
    )
    assert _tree(r1.path) == [
        "assets",
        "assets/vocab.json",
        "assets/vocab.portable.json",
        "deeplog.onnx",
        "deeplog.onnx.meta.json",
        "golden.npz",
        "release.json",
        "report.html",
        "report.json",
    ]
    manifest = json.loads((r1.path / "release.json").read_text())
    assert manifest["passed"] is True and manifest["model_file"] == "deeplog.onnx"
    assert set(manifest["files"]) == set(_tree(r1.path)) - {"assets", "release.json"}
    portable = json.loads((r1.path / "assets/vocab.portable.json").read_text())
    assert portable["0"] == "template <0> seen" and len(portable) == 30
    # no staging leftovers, and the name folder holds exactly the releases and the pointers
    assert sorted(p.name for p in (releases / "deeplog").iterdir() if p.name != ".latest.lock") == sorted(
        ["LATEST", "latest", r1.version, r2.version]
    )


def _no_staging_paths(bundle):
    for p in bundle.rglob("*"):
        if p.suffix in (".json", ".html"):
            assert ".staging-" not in p.read_text(encoding="utf-8"), p


def test_bundle_files_name_no_staging_paths(shipped):
    _, r1, r2 = shipped
    _no_staging_paths(r1.path)
    assert json.loads((r1.path / "report.json").read_text())["onnx_path"] == "deeplog.onnx"


def test_metadata_is_embedded_and_matches_the_sidecar(shipped):
    _, r1, _ = shipped
    model = onnx.load(str(r1.release.model_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["release_version"] == r1.version
    # typed read-back: a short sha can be all digits or look like 12e4567, which plain text would turn into a number
    assert read_metadata(model)["git_sha"] == r1.version.rsplit("-", 1)[1]
    assert json.loads(props["assets"]) == r1.release.meta["assets"]
    assert props["vocab_size"] == "30" and props["exporter"] == "torchscript"
    meta = r1.release.meta
    assert (
        meta["release_version"] == r1.version
        and meta["onnx_sha256"] == r1.release.manifest["files"]["deeplog.onnx"]
    )


def test_golden_replays_without_torch(shipped):
    _, r1, _ = shipped
    golden = read_golden(r1.path / "golden.npz")
    assert golden.inputs["input_sequence"].shape == (4, 10)
    got = OnnxRuntimeRunner(r1.release.model_path).infer(golden.inputs)
    np.testing.assert_allclose(got["output_0"], golden.outputs["output_0"], atol=1e-5, rtol=1e-4)
    assert golden.meta["release"] == r1.version


def test_report_records_the_verification(shipped):
    _, r1, _ = shipped
    report = json.loads((r1.path / "report.json").read_text())
    assert report["passed"] is True and report["failure_reason"] is None
    sweep = [g["status"] for g in report["shapes"] if g["kind"] == "sweep"]
    assert len(sweep) >= 3 and set(sweep) == {"passed"}
    assert report["candidates"][0]["outcome"] == "accepted"
    assert report["onnx_sha256"] == r1.release.meta["onnx_sha256"]  # the report describes the file that ships
    assert "<html" in (r1.path / "report.html").read_text().lower()
    assert r1.report.passed and r1.to_dict()["verification"].startswith("PASSED")


def test_latest_pointer_and_list(shipped):
    releases, r1, r2 = shipped
    name_dir = releases / "deeplog"
    assert os.readlink(name_dir / "latest") == r2.version
    assert (name_dir / "LATEST").read_text().strip() == r2.version
    assert current_latest(name_dir) == r2.version
    assert resolve_release(name_dir) == r2.path.resolve() == resolve_release(name_dir / "latest")
    rows = list_releases(name_dir)
    assert [r.version for r in rows] == [r1.version, r2.version]
    assert [r.latest for r in rows] == [False, True] and all(r.passed and r.error is None for r in rows)
    assert rows[0].size_bytes > 10_000


def test_bundle_is_read_only_and_versions_are_immutable(shipped):
    releases, r1, _ = shipped
    for p in [r1.path, *r1.path.rglob("*")]:
        assert not stat.S_IMODE(p.stat().st_mode) & 0o222, p
    with pytest.raises(PackagingError, match="already exists and releases are immutable"):
        ReleaseWriter(releases, "deeplog", when=T1, sha=r1.version.rsplit("-", 1)[1])
    assert not list((releases / "deeplog").glob(".staging-*"))


def test_sha256_mismatch_is_refused(shipped, tmp_path):
    _, r1, _ = shipped
    copy = writable_copy(r1.path, tmp_path / r1.version)
    model = onnx.load(str(copy / "deeplog.onnx"))
    model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))
    onnx.save(model, str(copy / "deeplog.onnx"))
    with pytest.raises(PackagingError) as exc:
        read_release(copy)
    assert "sha256 of deeplog.onnx" in exc.value.message and "metadata sidecar" in exc.value.message
    assert "immutable" in exc.value.hint
    read_release(copy, check=False)  # the structure is still fine


def test_tampered_asset_is_refused(shipped, tmp_path):
    _, r1, _ = shipped
    copy = writable_copy(r1.path, tmp_path / r1.version)
    (copy / "assets/vocab.json").write_text("{}")
    with pytest.raises(PackagingError, match="sha256 of assets/vocab.json does not match"):
        read_release(copy)


@pytest.mark.parametrize("make", ["missing", "empty", "not_release", "bad_manifest"])
def test_not_a_release(tmp_path, make):
    target = tmp_path / "x"
    if make != "missing":
        target.mkdir()
    if make == "not_release":
        (target / "model.onnx").write_bytes(b"123")
    if make == "bad_manifest":
        (target / "release.json").write_text("[1]")
    with pytest.raises(PackagingError) as exc:
        read_release(target)
    assert "release.json" in exc.value.hint


def test_failed_asset_after_export_writes_nothing(shipped, deeplog_model, tmp_path):
    from onnxship.ship import ship

    releases, _, r2 = shipped
    vocab = write_vocab(tmp_path / "vocab.json", n=12)  # the model's vocabulary is 30
    before = _tree(releases)
    with pytest.raises(PackagingError, match="12 entries but the model"):
        ship(
            deeplog_model,
            config=ship_config(releases),
            assets=[AssetSpec("vocab", vocab)],
            when=datetime(2026, 11, 3, tzinfo=timezone.utc),
        )
    assert _tree(releases) == before
    assert current_latest(releases / "deeplog") == r2.version


def test_template_id_vocab_fails_before_export(deeplog_model, tmp_path):
    from onnxship.ship import ship

    vocab = write_vocab(tmp_path / "vocab.json", digit_keys=True)
    with pytest.raises(PackagingError, match="not template strings"):
        ship(deeplog_model, config=ship_config(tmp_path / "releases"), assets=[AssetSpec("vocab", vocab)])
    assert not (tmp_path / "releases").exists()


def test_unwritable_releases_folder(deeplog_model, tmp_path):
    from onnxship.ship import ship

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PackagingError, match="cannot write releases to") as exc:
        ship(deeplog_model, config=ship_config(blocker / "releases"))
    assert "writable folder" in exc.value.hint
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_releases_folder(deeplog_model, tmp_path):
    from onnxship.ship import ship

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(PackagingError, match="cannot write releases to"):
            ship(deeplog_model, config=ship_config(ro))
    finally:
        ro.chmod(0o755)


def test_stale_staging_of_a_dead_process_is_removed(tmp_path):
    name_dir = tmp_path / "deeplog"
    stale = name_dir / ".staging-999999999-abc"
    stale.mkdir(parents=True)
    (stale / "deeplog.onnx").write_bytes(b"half")
    mine = name_dir / f".staging-{os.getpid()}-live"
    mine.mkdir()
    with ReleaseWriter(tmp_path, "deeplog", sha="nogit") as w:
        assert w.cleaned == [stale.name]
        assert w.path.is_dir()
    assert not stale.exists() and mine.exists() and not w.path.exists()


def test_bad_model_name(tmp_path):
    with pytest.raises(UsageError, match="'../escape' is not a safe file name"):
        ReleaseWriter(tmp_path, "../escape")


def test_list_errors(shipped, tmp_path):
    releases, r1, _ = shipped
    with pytest.raises(PackagingError, match="single release"):
        list_releases(r1.path)
    with pytest.raises(PackagingError, match="holds no releases"):
        list_releases(tmp_path)
    (tmp_path / "junk").mkdir()
    rows = list_releases(tmp_path)
    assert rows[0].error and "not a release" in rows[0].error


def test_ship_needs_inputs(deeplog_model, tmp_path):
    from onnxship.ship import ship

    cfg = ship_config(tmp_path)
    cfg.export.inputs = []
    with pytest.raises(ConfigError, match="no input specs"):
        ship(deeplog_model, config=cfg)
    assert not (tmp_path / "deeplog").exists() or not any((tmp_path / "deeplog").iterdir())


def test_second_release_same_second_is_refused(shipped, deeplog_model):
    from onnxship.ship import ship

    releases, _, r2 = shipped
    with pytest.raises(PackagingError, match="immutable"):
        ship(deeplog_model, config=ship_config(releases), when=T2)
    assert current_latest(releases / "deeplog") == r2.version


def test_optimized_variants_join_the_bundle(deeplog_model, tmp_path):
    from onnxship.ship import ship

    cfg = ship_config(tmp_path)
    cfg.optimize.variants = ["int8"]
    result = ship(deeplog_model, config=cfg)
    assert [(v["variant"], v["status"]) for v in result.variants] == [("int8-dynamic", "kept")]
    assert (result.path / "variants/deeplog.int8-dynamic.onnx").is_file()
    report = json.loads((result.path / "report.json").read_text())
    assert report["variants"][0]["file"] == "variants/deeplog.int8-dynamic.onnx"
    assert report["variants"][0]["gate"] is not None
    assert "variants/deeplog.int8-dynamic.onnx" in result.release.manifest["files"]
    assert list_releases(tmp_path / "deeplog")[0].variants == ["int8-dynamic"]
    _no_staging_paths(result.path)


def test_unknown_variant_fails_before_export(deeplog_model, tmp_path):
    from onnxship.ship import ship

    cfg = ship_config(tmp_path)
    cfg.optimize.variants = ["int4"]
    with pytest.raises(ConfigError, match="unknown variant 'int4'"):
        ship(deeplog_model, config=cfg)
    assert not (tmp_path / "deeplog").exists()


FROZEN_BRANCH = '''
import torch
from torch import nn


class Frozen(nn.Module):
    """A Python branch on a tensor value: tracing freezes the branch taken for the export's small ids."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(300, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.embedding(x).mean(dim=1)
        if x.max() > 100:
            h = h * 2
        return self.fc(h)


def build_model():
    torch.manual_seed(0)
    return Frozen()
'''


def test_failed_verification_releases_nothing(tmp_path):
    """The export gate passes on ids 0..30; the user's data (ids up to 300) shows the frozen branch."""
    import warnings

    from onnxship import VerificationError
    from onnxship.ship import ship

    (tmp_path / "frozen.py").write_text(FROZEN_BRANCH, encoding="utf-8")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.integers(150, 300, size=(16, 10)).astype(np.int64))
    cfg = ship_config(tmp_path / "releases")
    cfg.export.inputs = ["x:batch=2..8 x 10:int64:0..30"]
    cfg.export.metadata = {}
    cfg.model.name = "frozen"
    cfg.verify.data = str(tmp_path / "data.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TracerWarning about the branch is the point of this model
        with pytest.raises(VerificationError) as exc:
            ship(f"{tmp_path / 'frozen.py'}:build_model", config=cfg)
    assert "does not match PyTorch" in exc.value.message and "nothing was released" in exc.value.hint
    assert exc.value.report is not None and not exc.value.report.passed
    assert not (tmp_path / "releases").exists()  # nothing released, not even the folders ship created


def test_list_on_the_releases_root_names_the_models(shipped):
    releases, _, _ = shipped
    with pytest.raises(PackagingError, match=r"several models \(deeplog\)") as exc:
        list_releases(releases)
    assert "onnxship list" in exc.value.hint


def test_an_older_release_does_not_take_latest(deeplog_model, tmp_path):
    from onnxship.ship import ship

    newer = ship(deeplog_model, config=ship_config(tmp_path), when=T2)
    older = ship(deeplog_model, config=ship_config(tmp_path), when=T1)  # e.g. a slower concurrent run
    assert newer.latest is not None and older.latest is None
    assert current_latest(tmp_path / "deeplog") == newer.version
    assert any("latest stays at" in n for n in older.notes)


def test_ship_writes_the_triton_repository(deeplog_model, tmp_path):
    from onnxship.ship import ship

    cfg = ship_config(tmp_path / "releases")
    cfg.package.triton.repo = str(tmp_path / "repo")
    cfg.package.triton.max_batch_size = 8
    result = ship(deeplog_model, config=cfg)
    assert result.triton is not None and result.triton.versions == {1: result.version}
    assert "max_batch_size: 8" in (tmp_path / "repo/deeplog/config.pbtxt").read_text()


def test_a_triton_config_triton_would_refuse_releases_nothing(deeplog_model, tmp_path):
    from onnxship.ship import ship

    cfg = ship_config(tmp_path / "releases")
    cfg.package.triton.repo = str(tmp_path / "repo")
    cfg.package.triton.max_batch_size = 1000  # the declared batch maximum is 16
    with pytest.raises(PackagingError, match="above the declared batch maximum 16"):
        ship(deeplog_model, config=cfg)
    assert not (tmp_path / "releases").exists()  # nothing released, not even the folders ship created
    assert not (tmp_path / "repo").exists()
