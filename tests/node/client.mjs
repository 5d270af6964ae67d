// A memstore client in Node, built from proto/memstore/v1/memstore.proto and docs/kv-keys.md alone.
// Usage: node client.mjs TARGET   (TARGET: HOST:PORT or unix:PATH of a running `memstore serve`)
// Talks to the Store service (bytes and typed arrays, batches, misses, deletes), computes KV keys
// itself from the spec and checks them against docs/kv-keys.json, stores KV blocks and looks them
// up, asks Explain, and uses the Memory service. Prints one JSON line of what it stored for the
// caller to check from another language; exits non-zero at the first thing that is not as expected.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const target = process.argv[2];
if (!target) throw new Error("usage: node client.mjs TARGET");

const definition = protoLoader.loadSync(join(ROOT, "proto", "memstore", "v1", "memstore.proto"), {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
});
const v1 = grpc.loadPackageDefinition(definition).memstore.v1;
const store = new v1.Store(target, grpc.credentials.createInsecure());
const memory = new v1.Memory(target, grpc.credentials.createInsecure());

function unary(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, { deadline: Date.now() + 30000 }, (err, answer) => (err ? reject(err) : resolve(answer))),
  );
}

// Put: one stream of PutChunk messages; each item says how many bytes of `data` are its value's.
function put(namespace, values) {
  return new Promise((resolve, reject) => {
    const call = store.Put({ deadline: Date.now() + 30000 }, (err, answer) => (err ? reject(err) : resolve(answer)));
    const items = values.map(({ key, bytes, array, parent }) => ({
      key,
      size: bytes.length,
      array: array ?? null,
      offset: 0,
      length: bytes.length,
      parent: parent ?? Buffer.alloc(0),
    }));
    call.write({ namespace, items, data: Buffer.concat(values.map((v) => v.bytes)) });
    call.end();
  });
}

// Get: a stream of GetChunk messages; a value may come in pieces, in order.
function get(namespace, keys) {
  return new Promise((resolve, reject) => {
    const out = keys.map(() => null);
    const parts = keys.map(() => []);
    const call = store.Get({ namespace, keys, no_promote: false }, { deadline: Date.now() + 30000 });
    call.on("data", (chunk) => {
      let pos = 0;
      for (const item of chunk.items) {
        if (!item.found) continue;
        parts[item.index].push(chunk.data.subarray(pos, pos + Number(item.length)));
        pos += Number(item.length);
        if (item.offset === 0) out[item.index] = { array: item.array };
      }
    });
    call.on("error", reject);
    call.on("end", () =>
      resolve(out.map((v, i) => (v === null ? null : { ...v, bytes: Buffer.concat(parts[i]) }))),
    );
  });
}

// ---- the KV key spec (docs/kv-keys.md) ----------------------------------------------------------
const vectors = JSON.parse(readFileSync(join(ROOT, "docs", "kv-keys.json"), "utf8"));
const sha256 = (...parts) => createHash("sha256").update(Buffer.concat(parts)).digest();

function canonicalJson(fields) {
  const full = { ...vectors.defaults, ...fields };
  const sorted = {};
  for (const k of Object.keys(full).sort()) sorted[k] = full[k];
  return JSON.stringify(sorted);
}

function identityDigest(fields) {
  return sha256(Buffer.from("memstore.kv.v1\0"), Buffer.from(canonicalJson(fields), "utf8"));
}

function blockKeys(digest, tokens, blockTokens, extra = Buffer.alloc(0), partial = false) {
  let h = sha256(Buffer.from("memstore.kv.v1/root\0"), digest);
  const keys = [];
  const count = Math.floor(tokens.length / blockTokens) + (partial && tokens.length % blockTokens ? 1 : 0);
  for (let i = 0; i < count; i++) {
    const ids = tokens.slice(i * blockTokens, (i + 1) * blockTokens);
    const le = Buffer.alloc(4 * ids.length);
    ids.forEach((t, j) => le.writeUInt32LE(t, 4 * j));
    h = sha256(h, le, extra);
    keys.push(h);
  }
  return keys;
}

function blockShape(fields) {
  const f = { ...vectors.defaults, ...fields };
  return [f.num_layers, 2, f.num_kv_heads, f.block_tokens, f.head_dim];
}

function checkVectors() {
  for (const c of vectors.cases) {
    assert.equal(canonicalJson(c.fields), c.canonical_json);
    const digest = identityDigest(c.fields);
    assert.equal(digest.toString("hex"), c.identity_digest);
    assert.equal("kv-" + digest.subarray(0, 20).toString("hex"), c.namespace);
    assert.equal(vectors.storage_dtypes[{ ...vectors.defaults, ...c.fields }.kv_dtype], c.storage_dtype);
    assert.deepEqual(blockShape(c.fields), c.block_shape);
    for (const b of c.blocks) {
      const n = { ...vectors.defaults, ...c.fields }.block_tokens;
      const keys = blockKeys(digest, b.tokens, n, Buffer.from(b.extra, "hex"), b.partial);
      assert.deepEqual(keys.map((k) => k.toString("hex")), b.keys);
    }
  }
}

async function main() {
  const report = {};

  // Store: bytes, a typed array, a batch with a miss, exists, delete.
  const ns = await unary(store, "CreateNamespace", { name: "node", durability: "CACHE" });
  assert.equal(ns.namespace.name, "node");
  const floats = new Float32Array([1.5, -2.25, 3, 4.125, 5, 6]);
  const stored = await put("node", [
    { key: Buffer.from("greeting"), bytes: Buffer.from("hello from node") },
    { key: Buffer.from("floats"), bytes: Buffer.from(floats.buffer), array: { dtype: "<f4", shape: [2, 3] } },
  ]);
  assert.equal(stored.stored, 2);
  const got = await get("node", [Buffer.from("greeting"), Buffer.from("missing"), Buffer.from("floats")]);
  assert.equal(got[0].bytes.toString(), "hello from node");
  assert.equal(got[1], null);
  assert.deepEqual(got[2].array, { dtype: "<f4", shape: [2, 3] });
  const back = new Float32Array(got[2].bytes.buffer.slice(got[2].bytes.byteOffset, got[2].bytes.byteOffset + 24));
  assert.deepEqual(Array.from(back), Array.from(floats));
  const exists = await unary(store, "Exists", { namespace: "node", keys: [Buffer.from("greeting"), Buffer.from("x")] });
  assert.deepEqual(exists.exists, [true, false]);
  const deleted = await unary(store, "Delete", { namespace: "node", keys: [Buffer.from("greeting")] });
  assert.deepEqual(deleted.deleted, [true]);
  const why = await unary(store, "Explain", { namespace: "node", key: Buffer.from("greeting") });
  assert.equal(why.state, "deleted");
  report.store = "ok";

  // KV: the spec's vectors, then blocks under keys computed here, found by Lookup.
  checkVectors();
  const fields = vectors.cases[2].fields; // float32, a block of 1 x 2 x 1 x 3 x 2 elements
  const digest = identityDigest(fields);
  const kvNs = "kv-" + digest.subarray(0, 20).toString("hex");
  const shape = blockShape(fields);
  await unary(store, "CreateNamespace", {
    name: kvNs,
    durability: "CACHE",
    value_layout: { dtype: "<f4", shape },
    identity: canonicalJson(fields),
  });
  const tokens = [11, 12, 13, 21, 22, 23, 31, 32, 33, 41];
  const keys = blockKeys(digest, tokens, shape[3]);
  assert.equal(keys.length, 3);
  const blocks = keys.slice(0, 2).map((key, i) => {
    const values = Float32Array.from({ length: 12 }, (_, j) => 100 * (i + 1) + j);
    return { key, bytes: Buffer.from(values.buffer), array: { dtype: "<f4", shape }, parent: i ? keys[i - 1] : undefined };
  });
  assert.equal((await put(kvNs, blocks)).stored, 2);
  const tiers = await unary(store, "Lookup", { namespace: kvNs, keys });
  assert.deepEqual(tiers.tiers, ["HOT", "HOT", "TIER_NONE"]);
  const other = { ...fields, revision: "other" };
  const miss = await unary(store, "Explain", { namespace: kvNs, key: keys[2], identity: canonicalJson(other) });
  assert.equal(miss.state, "never_stored");
  report.kv = { fields, tokens, stored_blocks: 2, namespace: kvNs };

  // Memory: put, get, keyword search, delete.
  const record = {
    namespace: ["user-1", "facts"],
    key: "sky",
    value_json: JSON.stringify({ colour: "blue" }),
    text: "the sky is blue on a clear day",
    metadata_json: JSON.stringify({ source: "node" }),
    tags: ["weather"],
  };
  const versions = await unary(memory, "Put", { writes: [{ record }] });
  assert.equal(versions.versions.length, 1);
  const entries = await unary(memory, "Get", { keys: [{ namespace: ["user-1", "facts"], key: "sky" }] });
  assert.equal(entries.entries[0].found, true);
  assert.deepEqual(JSON.parse(entries.entries[0].record.value_json), { colour: "blue" });
  const hits = await unary(memory, "Search", { namespace_prefix: ["user-1"], query: "sky", top_k: 5 });
  assert.equal(hits.records[0].key, "sky");
  const gone = await unary(memory, "Delete", { keys: [{ namespace: ["user-1", "facts"], key: "sky" }] });
  assert.deepEqual(gone.deleted, [true]);
  report.memory = "ok";

  console.log(JSON.stringify(report));
  store.close();
  memory.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
