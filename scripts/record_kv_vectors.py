"""Write ``docs/kv-keys.json``: golden vectors of the KV key spec (``docs/kv-keys.md``), made by the
Python implementation. The Python tests and the Node client's test both check themselves against it;
rerun this only when the spec itself changes (its version then changes too)."""

from __future__ import annotations

import json
from pathlib import Path

from memstore.kv import STORAGE_DTYPES, KVIdentity, block_keys

ROOT = Path(__file__).resolve().parents[1]

IDENTITIES = [
    {
        "model_id": "meta-llama/Llama-3.1-8B",
        "revision": "main",
        "num_layers": 32,
        "num_kv_heads": 8,
        "head_dim": 128,
        "kv_dtype": "bfloat16",
        "block_tokens": 4,
    },
    {
        "model_id": "Qwen/Qwen2.5-7B-Instruct",
        "num_layers": 28,
        "num_kv_heads": 4,
        "head_dim": 128,
        "kv_dtype": "float8_e4m3fn",
        "block_tokens": 16,
        "tp_rank": 1,
        "tp_size": 2,
        "adapter_id": "lora-7",
        "cache_salt": "s3cr3t",
        "tenant": "acme",
        "weights_digest": "sha256:00ff",
    },
    {
        "model_id": "模型/ünïcode",
        "num_layers": 1,
        "num_kv_heads": 1,
        "head_dim": 2,
        "kv_dtype": "float32",
        "block_tokens": 3,
    },
]
TOKENS = [
    {"tokens": list(range(10)), "partial": True, "extra": ""},
    {"tokens": list(range(10)), "partial": False, "extra": ""},
    {
        "tokens": [4294967295, 0, 7, 123456789, 42, 1, 2, 3, 99, 100, 101, 102, 103, 104, 105, 106, 107],
        "partial": True,
        "extra": "6d6d2d68617368",
    },
    {"tokens": [], "partial": True, "extra": ""},
]


def main() -> None:
    cases = []
    for fields in IDENTITIES:
        ident = KVIdentity(**fields)  # type: ignore[arg-type]
        blocks = []
        for t in TOKENS:
            keys = block_keys(
                ident.digest(),
                t["tokens"],
                ident.block_tokens,
                extra=bytes.fromhex(str(t["extra"])),
                partial=bool(t["partial"]),
            )
            blocks.append({**t, "keys": [k.hex() for k in keys]})
        cases.append(
            {
                "fields": fields,
                "canonical_json": ident.canonical_json().decode(),
                "identity_digest": ident.digest().hex(),
                "namespace": ident.namespace,
                "storage_dtype": ident.storage_dtype,
                "block_shape": list(ident.block_shape),
                "block_bytes": ident.block_bytes,
                "blocks": blocks,
            }
        )
    out = {
        "spec": "memstore.kv.v1",
        "defaults": {
            k: v
            for k, v in KVIdentity("m", 1, 1, 1).__dict__.items()
            if k not in ("model_id", "num_layers", "num_kv_heads", "head_dim")
        },
        "storage_dtypes": STORAGE_DTYPES,
        "cases": cases,
    }
    path = ROOT / "docs" / "kv-keys.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
