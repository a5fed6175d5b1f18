"""32 concurrent clients while 10 reloads happen (2 of them broken) on two worker processes: no failed request,
every answer from one whole model, and the version a response names is the model that computed it."""

from __future__ import annotations

import http.client
import json
import threading
import time

import numpy as np

CLIENTS = 32
MIN_REQUESTS = 20  # per client, and each keeps going until the reloads are done
MAX_REQUESTS = 400  # per client: bounds the test if reloads were slow


def test_concurrent_clients_during_reloads(bundles, start_server):
    s = start_server(
        ["--releases", str(bundles.root), "--max-batch", "32", "--batch-timeout-ms", "2", "--workers", "2"]
    )
    host, port = s.hostport.split(":")
    rng = np.random.default_rng(42)
    inputs = [
        rng.integers(0, 30, size=(1 + i % 3, 10 + 2 * (i % 2))).astype(np.int64) for i in range(CLIENTS)
    ]
    plan = [
        bundles.v2,
        bundles.v1,
        bundles.bad_golden,
        bundles.v2,
        bundles.v1,
        bundles.truncated,
        bundles.v2,
        bundles.v1,
        bundles.v2,
        bundles.v1,
    ]
    results: list[list[tuple[str, np.ndarray]]] = [[] for _ in range(CLIENTS)]
    failures: list[str] = []
    reloads: list[tuple[int, dict]] = []
    done = threading.Event()
    start = threading.Barrier(CLIENTS + 1)

    def client(i: int) -> None:
        x = inputs[i]
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input_sequence",
                        "shape": list(x.shape),
                        "datatype": "INT64",
                        "data": x.reshape(-1).tolist(),
                    }
                ]
            }
        )
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        start.wait()
        n = 0
        try:
            while n < MAX_REQUESTS and (n < MIN_REQUESTS or not done.is_set()):
                conn.request("POST", "/v2/models/deeplog/infer", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
                n += 1
                if resp.status != 200:
                    failures.append(f"client {i}: {resp.status} {raw[:200]!r}")
                    continue
                doc = json.loads(raw)
                out = doc["outputs"][0]
                results[i].append(
                    (doc["model_version"], np.asarray(out["data"], np.float32).reshape(out["shape"]))
                )
        except Exception as exc:  # a dropped connection is a failed request
            failures.append(f"client {i}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for bundle in plan:
        time.sleep(0.3)
        status, doc = s.json("POST", "/reload", {"model_path": str(bundle)})
        reloads.append((status, doc))
    done.set()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "clients did not finish"

    assert failures == [], failures[:5]
    statuses = [st for st, _ in reloads]
    assert statuses == [200, 200, 422, 200, 200, 422, 200, 200, 200, 200], [d for _, d in reloads]
    versions = {"1": bundles.v1.name}
    versions.update({d["model_version"]: d["release"] for st, d in reloads if st == 200})
    assert sorted(versions, key=int) == [str(v) for v in range(1, 10)]  # 8 swaps: versions 1..9

    total = 0
    seen_versions = set()
    for i, answers in enumerate(results):
        expected = {
            rel: bundles.expected(rel, {"input_sequence": inputs[i]}) for rel in set(versions.values())
        }
        assert len(answers) >= MIN_REQUESTS
        for version, out in answers:
            release = versions[version]  # KeyError: a version that no reload produced
            np.testing.assert_allclose(out, expected[release], atol=1e-5)  # the whole answer from that model
            seen_versions.add(version)
            total += 1
    assert len(seen_versions) >= 3, seen_versions  # requests really ran across reloads
    metrics = s.request("GET", "/metrics")[2].decode()
    assert 'onnxship_reloads_total{outcome="failed"} 2' in metrics
    assert 'onnxship_reloads_total{outcome="ok"} 8' in metrics
    print(
        f"\n{total} requests from {CLIENTS} clients in {elapsed:.1f} s across versions {sorted(seen_versions, key=int)}"
    )
