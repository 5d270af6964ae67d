"""One side of disaggregated prefill and decode; run with the vLLM environment's python.

    python tests/vllm/disagg.py producer|consumer TARGET MODEL_DIR OUT_JSON

The producer (``kv_role="kv_producer"``, a prefill instance) builds the tiny model in MODEL_DIR and
runs the prompts; it only stores. The consumer (``kv_role="kv_consumer"``, a decode instance, with its
own memstore server on the same pool) runs them again; it only loads. OUT_JSON gets each prompt's tokens
and logprobs and the connector's log.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# 600 words: 4 full blocks of 128 tokens and a partial one; the second shares no block with it.
PROMPTS = {
    "long": " ".join(f"w{i}" for i in range(600)),
    "other": " ".join(f"w{1999 - i}" for i in range(300)),
}
FRESH = " ".join(f"w{700 + i}" for i in range(300))  # only the consumer runs it


def main(role: str, target: str, model_dir: str, out_path: str) -> None:
    from engine import engine, events, run
    from make_model import build

    if role == "producer":
        build(model_dir)
    log = out_path + ".log.jsonl"
    llm = engine(model_dir, target, log, role="kv_" + role)
    runs = {name: run(llm, prompt) for name, prompt in PROMPTS.items()}
    if role == "consumer":  # a prompt the producer never ran: computed, and not stored either
        runs["fresh"] = run(llm, FRESH)
        runs["fresh_again"] = run(llm, FRESH)
    tokenizer = llm.get_tokenizer()
    result = {
        "runs": runs,
        "prompt_tokens": {name: len(tokenizer.encode(p)) for name, p in PROMPTS.items()},
        "block_size": llm.llm_engine.vllm_config.cache_config.block_size,
        "events": events(log) if os.path.exists(log) else [],
    }
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
