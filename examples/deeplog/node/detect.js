#!/usr/bin/env node
// A second consumer of a DeepLog release, outside Python: onnxruntime-node loads <name>.onnx, the portable
// vocabulary (assets/vocab.portable.json, {"0": "template", ...}) and <name>.onnx.meta.json (seq_len, top_g,
// input name), maps the golden windows' template STRINGS to ids itself, and decides anomaly = "the true next event
// is not among the top-g logits" with the same tie rule as Python (a stable sort of the negated logits: on equal
// logits the lower id ranks first).
//
// usage: node detect.js <release-dir> <golden_windows.json>
// prints one JSON object: {"windows", "agree", "disagree", "top_g_set_agree", "decisions": [...], ...}
"use strict";

const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-node");

function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}

function readJson(file, what) {
  if (!fs.existsSync(file)) fail(`${what} ${file} does not exist`);
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    return fail(`${what} ${file} is not valid JSON (${err.message})`);
  }
}

function topG(row, g) {
  const ids = Array.from(row.keys());
  ids.sort((a, b) => (row[b] - row[a]) || (a - b));
  return ids.slice(0, g);
}

async function main() {
  const [releaseDir, goldenPath] = process.argv.slice(2);
  if (!releaseDir || !goldenPath) fail("usage: node detect.js <release-dir> <golden_windows.json>");
  const manifest = readJson(path.join(releaseDir, "release.json"), "release manifest");
  const modelPath = path.join(releaseDir, manifest.model_file);
  const meta = readJson(`${modelPath}.meta.json`, "metadata sidecar");
  const portable = readJson(path.join(releaseDir, "assets", "vocab.portable.json"),
    "portable vocab (ship with --portable)");
  const golden = readJson(goldenPath, "golden windows");

  // The engine form maps "id" -> template; invert it, and check it is the contiguous 0..N-1 the model expects.
  const n = Object.keys(portable).length;
  const idOf = new Map();
  for (const [key, template] of Object.entries(portable)) {
    if (!/^\d+$/.test(key) || typeof template !== "string") fail(`portable vocab entry ${key} is not "id": "template"`);
    idOf.set(template, Number(key));
  }
  if (idOf.size !== n || [...idOf.values()].some((i) => i >= n)) fail("portable vocab ids are not 0..N-1");
  if (meta.vocab_size !== n) fail(`portable vocab has ${n} entries, meta.vocab_size is ${meta.vocab_size}`);
  const seqLen = meta.seq_len;
  const g = golden.top_g || meta.top_g || 9;
  const inputName = (meta.inputs && meta.inputs[0] && meta.inputs[0].name) || "input_sequence";

  const windows = golden.windows;
  const data = new BigInt64Array(windows.length * seqLen);
  const next = [];
  windows.forEach((w, r) => {
    if (w.templates.length !== seqLen) fail(`window ${r} has ${w.templates.length} events, seq_len is ${seqLen}`);
    w.templates.forEach((t, c) => {
      if (!idOf.has(t)) fail(`window ${r}: template not in the vocab: ${t}`);
      data[r * seqLen + c] = BigInt(idOf.get(t));
    });
    if (!idOf.has(w.next_template)) fail(`window ${r}: next template not in the vocab`);
    next.push(idOf.get(w.next_template));
  });

  const session = await ort.InferenceSession.create(modelPath);
  const feeds = { [inputName]: new ort.Tensor("int64", data, [windows.length, seqLen]) };
  const out = await session.run(feeds);
  const logits = out[session.outputNames[0]];
  const classes = logits.dims[1];
  const decisions = [];
  let agree = 0;
  let setAgree = 0;
  let idsAgree = 0;
  windows.forEach((w, r) => {
    const row = Array.from(logits.data.subarray(r * classes, (r + 1) * classes));
    const top = topG(row, g);
    const anomaly = !top.includes(next[r]);
    decisions.push(anomaly);
    if (anomaly === w.anomaly) agree += 1;
    const a = [...top].sort((x, y) => x - y).join(",");
    const b = [...w.top_g].sort((x, y) => x - y).join(",");
    if (a === b) setAgree += 1;
    if (w.ids.every((id, c) => Number(data[r * seqLen + c]) === id) && w.next === next[r]) idsAgree += 1;
  });
  process.stdout.write(JSON.stringify({
    runtime: `onnxruntime-node ${require("onnxruntime-node/package.json").version}`,
    release: manifest.version,
    windows: windows.length,
    top_g: g,
    agree,
    disagree: windows.length - agree,
    top_g_set_agree: setAgree,
    ids_agree: idsAgree,
    anomalies: decisions.filter(Boolean).length,
    decisions,
  }) + "\n");
}

main().catch((err) => fail(err && err.message ? err.message : String(err)));
