"""Triton model repositories generated from a release's verified io signature.

The ONNX file's declared shapes are not trusted on their own (the dynamo exporter declares wrong output dims, see
EXPORTER-NOTES.md): input dims come from the verified input specs in the metadata sidecar, output dims from the
declarations the export corrected against the shape sweep, cross-checked with the golden outputs. Each config is
built as Triton's own ``ModelConfig`` protobuf message (tritonclient), printed with protobuf's text format,
and parsed back and checked before anything is written.

This module collects the releases and writes the repository; the message and its checks live in
``_triton_config``, the io signature in ``_triton_signature`` (both re-exported here).

DO NOT import tritonclient at module level.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from onnxship._errors import PackagingError
from onnxship._util import check_name, replace_dir
from onnxship.package._release import MANIFEST, Release, list_releases, read_release
from onnxship.package._triton_config import (
    MODEL_FILENAME,
    TRITON_DTYPES,
    TritonConfig,
    TritonResult,
    TritonTensor,
    _check_parsed,
    build_config,
    parse_triton_config,
    render_config,
)
from onnxship.package._triton_signature import triton_signature

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
    return _checked_text(name, mbs, ins, outs, config, _labels(release, outs), warm)


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
    text = _checked_text(name, mbs, ins, outs, config, labels, warm)
    files = {v[0][2]: v[1] for v in warm.values()} if warm else {}
    return _write_repo(config.repo, name, text, items, labels, mbs, ins, outs, notes, files)


def _checked_text(
    name: str,
    mbs: int,
    ins: list[TritonTensor],
    outs: list[TritonTensor],
    config: TritonConfig,
    labels: list[str] | None,
    warm: dict[str, tuple[tuple[str, list[int], str], bytes]] | None,
) -> str:
    """config.pbtxt text for one signature, parsed back and checked against what was asked."""
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
    return text


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
        replace_dir(tmp, final)
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
