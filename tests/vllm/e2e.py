"""vLLM (CPU) end to end with memstore as its KV connector; run with the vLLM environment's python.

    python tests/vllm/e2e.py OUT_JSON

Builds a tiny random-weight Llama with a locally trained tokenizer, starts ``memstore serve`` on a unix
socket, and runs prompts with vLLM's own prefix caching off, so every reuse comes from memstore.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(out_path: str) -> None:
    import grpc
    from engine import engine
    from engine import events as read_events
    from engine import run as generate
    from make_model import build

    from memstore import Client
    from memstore.kv import KVCache, KVIdentity

    work = tempfile.mkdtemp(prefix="memstore-vllm-")
    model_dir, sock, log = f"{work}/model", f"unix:{work}/memstore.sock", f"{work}/connector.jsonl"
    build(model_dir)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memstore.cli",
            "serve",
            "--listen",
            sock,
            "--data-dir",
            f"{work}/data",
            "--hot-bytes",
            "64MiB",
            "--warm-bytes",
            "64MiB",
            "--cold-bytes",
            "512MiB",
            "--log-level",
            "WARNING",
        ]
    )
    try:
        with grpc.insecure_channel(sock) as ch:
            grpc.channel_ready_future(ch).result(timeout=60)
        llm = engine(model_dir, sock, log)
        prompt_a = " ".join(f"w{i}" for i in range(300))  # 2 full blocks of 128 are reusable
        prompt_b = " ".join(f"w{i}" for i in range(128)) + " " + " ".join(f"w{1999 - i}" for i in range(172))
        prompt_c = " ".join(f"w{1000 + i}" for i in range(300))

        def run(prompt: str | list[int]) -> tuple[list[int], list[float]]:
            return generate(llm, prompt)

        def events() -> list[dict[str, object]]:
            return read_events(log)

        t0 = time.perf_counter()
        first = run(prompt_a)
        t1 = time.perf_counter()
        second = run(prompt_a)
        t2 = time.perf_counter()
        shared = run(prompt_b)
        ev = events()
        namespace = ev[0]["namespace"]
        lookups = [e for e in ev if e["event"] == "lookup"]
        loads = [e for e in ev if e["event"] == "load"]
        stores = [e for e in ev if e["event"] == "store"]
        tokenizer = llm.get_tokenizer()
        tokens, tokens_b = tokenizer.encode(prompt_a), tokenizer.encode(prompt_b)
        tokens_c = tokenizer.encode(prompt_c)
        with Client(sock) as c:
            cfg = llm.llm_engine.vllm_config
            mc = cfg.model_config
            ident = KVIdentity(
                model_id=model_dir,
                revision=mc.revision or "",
                num_layers=2,
                num_kv_heads=2,
                head_dim=64,
                kv_dtype="float32",
                block_tokens=cfg.cache_config.block_size,
            )
            kv = KVCache(c, ident)
            assert kv.ns == namespace, (kv.ns, namespace)
            # The partial hit against a run that computed everything: prompt B's blocks deleted first.
            c.delete_many(kv.keys(tokens_b), ns=kv.ns)
            shared_reference = run(prompt_b)
            reference_lookup = [e for e in events() if e["event"] == "lookup"][-1]
            # Prompt C's blocks stored under prompt A's keys: if the loaded KV is used as it is, A then
            # answers as C's first two blocks followed by A's tail, computed without any stored block.
            run(prompt_c)
            n = 2 * ident.block_tokens
            blocks_c = kv.get_blocks(tokens_c, 2)
            assert all(b is not None for b in blocks_c)
            kv.put_blocks(tokens, blocks_c)
            swapped = run(prompt_a)
            c.delete_many(kv.keys(tokens_c), ns=kv.ns)
            spliced = tokens_c[:n] + tokens[n:]
            swapped_reference = run(spliced)
            swapped_lookup = [e for e in events() if e["event"] == "lookup"][-1]
            # Retention hints from kv_transfer_params: a session the client ends, and one the
            # connector ends itself when its request finishes.
            hint = {"memstore_session": "chat-1", "memstore_ttl": 600}
            generate(llm, " ".join(f"w{3000 + i}" for i in range(300)), hint)
            hinted_store = [e for e in events() if e["event"] == "store"][-1]
            released = c.end_session("chat-1")
            ending = {"memstore_session": "chat-2", "memstore_end_session": True}
            generate(llm, " ".join(f"w{5000 + i}" for i in range(300)), ending)
            ended = [e for e in events() if e["event"] == "end_session"]
            released_again = c.end_session("chat-2")
            # An agent's turn that ends in a tool call: the connector pauses its session, with the
            # agent's estimate of the tool's run time.
            waiting = {
                "memstore_session": "agent-1",
                "memstore_pause_session": True,
                "memstore_resume_in": 45,
            }
            generate(llm, " ".join(f"w{7000 + i}" for i in range(300)), waiting)
            paused = [e for e in events() if e["event"] == "pause_session"]
            paused_again = c.end_session("agent-1", pause=True)
        result = {
            "paused": paused,
            "paused_again": paused_again,
            "hinted_store": hinted_store,
            "released": released,
            "ended": ended,
            "released_again": released_again,
            "first": first,
            "second": second,
            "shared": shared,
            "shared_reference": shared_reference,
            "reference_hit_blocks": reference_lookup["hit_blocks"],
            "swapped": swapped,
            "swapped_reference": swapped_reference,
            "swapped_reference_hit_blocks": swapped_lookup["hit_blocks"],
            "lookups": lookups,
            "loads": loads,
            "stores": stores,
            "seconds_first": t1 - t0,
            "seconds_second": t2 - t1,
            "block_size": ident.block_tokens,
            "prompt_tokens": len(tokens),
        }
        with open(out_path, "w") as f:
            json.dump(result, f)
        print(
            json.dumps({k: result[k] for k in ("first", "second", "swapped", "swapped_reference", "loads")}),
            flush=True,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    main(sys.argv[1])
