"""Agent-style request traces, in the Mooncake format plus a session field and an end marker.

Agents differ from chat in what a cache can be told: a session (one agent's task) sends turns whose
prompts grow by what the last turn added (its tool's output, the model's reply), pauses while a tool
runs (seconds, sometimes minutes), and then ends, after which none of its blocks comes back except the
system prompt it shares with other sessions. ``generate`` makes such a trace from a few parameters
(kept with it in the results' JSON); ``python bench/agent_trace.py OUT.jsonl`` writes one.

Each request: ``timestamp`` (ms), ``input_length`` (tokens), ``hash_ids`` (one id per block: equal ids
are equal prefixes), ``output_length``, ``session`` and, on a session's last turn, ``end_session``.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import random
import sys
from dataclasses import dataclass
from typing import Any

from memstore.replay import Request


@dataclass(frozen=True)
class AgentTraceParams:
    sessions: int = 400
    concurrency: int = 24  # sessions open at a time
    system_prompts: int = 6  # distinct system prompts, shared by the sessions that use them
    system_blocks: tuple[int, int] = (2, 8)  # blocks of a system prompt (uniform range)
    turns: tuple[int, int] = (2, 14)  # turns of a session
    growth_blocks: tuple[int, int] = (1, 4)  # blocks a turn adds (tool output, reply)
    think_ms: tuple[int, int] = (500, 4000)  # gap between turns when no tool runs
    tool_share: float = 0.35  # turns followed by a tool call
    tool_ms: tuple[int, int] = (5000, 90000)  # gap while a tool runs
    block_tokens: int = 512
    seed: int = 0


def generate(params: AgentTraceParams = AgentTraceParams()) -> list[Request]:
    """The trace, requests in time order; sessions start as others end, ``concurrency`` at a time."""
    rng = random.Random(params.seed)
    next_id = [0]

    def fresh(n: int) -> list[int]:
        ids = list(range(next_id[0], next_id[0] + n))
        next_id[0] += n
        return ids

    systems = [fresh(rng.randint(*params.system_blocks)) for _ in range(params.system_prompts)]
    # a session's turns, as (time offset, prompt blocks) from its start
    events: list[tuple[float, int, Request]] = []
    free_at = [0.0] * params.concurrency  # when each concurrency slot is free again
    heapq.heapify(free_at)
    for s in range(params.sessions):
        start = heapq.heappop(free_at) + rng.uniform(0, 1000)
        prompt = list(systems[int(rng.paretovariate(1.2)) % len(systems)])  # a few prompts dominate
        t = start
        turns = rng.randint(*params.turns)
        for turn in range(turns):
            prompt += fresh(rng.randint(*params.growth_blocks))
            output = rng.randint(50, 600)
            last = turn == turns - 1
            req = Request(
                timestamp=t,
                input_length=len(prompt) * params.block_tokens,
                hash_ids=tuple(prompt),
                output_length=output,
                session=f"s{s}",
                end_session=last,
            )
            events.append((t, len(events), req))
            gap = (
                rng.randint(*params.tool_ms)
                if rng.random() < params.tool_share
                else rng.randint(*params.think_ms)
            )
            t += gap
        heapq.heappush(free_at, t)
    events.sort()
    return [req for _, _, req in events]


def write(path: str, trace: list[Request]) -> None:
    with open(path, "w") as f:
        for r in trace:
            f.write(json.dumps(as_json(r)) + "\n")


def as_json(r: Request) -> dict[str, Any]:
    out: dict[str, Any] = {
        "timestamp": round(r.timestamp, 3),
        "input_length": r.input_length,
        "output_length": r.output_length,
        "hash_ids": list(r.hash_ids),
    }
    if r.session:
        out["session"] = r.session
    if r.end_session:
        out["end_session"] = True
    return out


def params_json(params: AgentTraceParams) -> dict[str, Any]:
    return dataclasses.asdict(params)


if __name__ == "__main__":
    write(sys.argv[1], generate())


def run_agent(args: Any) -> dict[str, Any]:
    """``python bench/run.py replay --agent``: every policy on a generated agent trace, without and
    with the trace's session hints, next to OPT, at the ``--capacity`` fractions of distinct blocks."""
    from tqdm import tqdm

    from bench.common import print_table, write_result
    from memstore.policy import POLICIES
    from memstore.replay import replay

    params = AgentTraceParams(sessions=120 if args.quick else AgentTraceParams.sessions)
    trace = generate(params)
    distinct = len({h for r in trace for h in r.hash_ids})
    fractions = [float(x) for x in args.capacity.split(",")]
    rows: list[dict[str, Any]] = []
    for frac in fractions:
        cap = max(1, int(distinct * frac))
        opt = replay(trace, "opt", cap, block_tokens=params.block_tokens).prefix_hit_ratio
        for name in tqdm(list(POLICIES), desc=f"agent replay @{frac:g}", unit="policy"):
            plain = replay(trace, name, cap, block_tokens=params.block_tokens).prefix_hit_ratio
            hinted = replay(trace, name, cap, block_tokens=params.block_tokens, hints=True).prefix_hit_ratio
            rows.append(
                {
                    "capacity": frac,
                    "blocks": cap,
                    "policy": name,
                    "no_hints": plain,
                    "hints": hinted,
                    "opt": opt,
                }
            )
    print_table(rows, ["capacity", "blocks", "policy", "no_hints", "hints", "opt"])
    summary: dict[str, Any] = {
        "trace_params": params_json(params),
        "requests": len(trace),
        "distinct_blocks": distinct,
    }
    for frac in fractions:
        at = [r for r in rows if r["capacity"] == frac]
        best = max(at, key=lambda r: r["hints"])
        best_plain = max(at, key=lambda r: r["no_hints"])
        summary[f"@{frac:g}"] = {
            "opt": at[0]["opt"],
            "best_with_hints": [best["policy"], best["hints"]],
            "best_without_hints": [best_plain["policy"], best_plain["no_hints"]],
            "points_below_opt_with_hints": round(100 * (at[0]["opt"] - best["hints"]), 2),
        }
        print(
            f"@{frac:g}: OPT {at[0]['opt']:.3f}; best with hints {best['policy']} {best['hints']:.3f} "
            f"({summary[f'@{frac:g}']['points_below_opt_with_hints']} points below); without hints "
            f"{best_plain['policy']} {best_plain['no_hints']:.3f}"
        )
    path = write_result(
        "replay-agent",
        rows,
        summary,
        args=args,
        config={"quick": args.quick, "capacity": fractions, "trace_params": params_json(params)},
    )
    _plot(rows, fractions, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return summary


def _plot(rows: list[dict[str, Any]], fractions: list[float], out: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fractions), figsize=(4.5 * len(fractions), 4), squeeze=False)
    for ax, frac in zip(axes[0], fractions, strict=True):
        at = [r for r in rows if r["capacity"] == frac]
        x = range(len(at))
        ax.bar([i - 0.2 for i in x], [r["no_hints"] for r in at], 0.4, label="no hints")
        ax.bar([i + 0.2 for i in x], [r["hints"] for r in at], 0.4, label="session hints")
        ax.axhline(at[0]["opt"], color="k", linestyle="--", label="OPT")
        ax.set_xticks(list(x), [r["policy"] for r in at], rotation=45, ha="right")
        ax.set_title(f"cache = {frac:g} of distinct blocks")
        ax.set_ylabel("token prefix hit ratio")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
