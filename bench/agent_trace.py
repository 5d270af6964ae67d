"""Agent-style request traces, in the Mooncake format plus a session field and an end marker.

Agents differ from chat in what a cache can be told: a session (one agent's task) sends turns whose
prompts grow by what the last turn added (its tool's output, the model's reply), pauses while a tool
runs (seconds, sometimes minutes), and then ends, after which none of its blocks comes back except the
system prompt it shares with other sessions. ``generate`` makes such a trace from a few parameters
(kept with it in the results' JSON); ``python bench/agent_trace.py OUT.jsonl`` writes one.

Each request: ``timestamp`` (ms), ``input_length`` (tokens), ``hash_ids`` (one id per block: equal ids
are equal prefixes), ``output_length``, ``session`` and, on a session's last turn, ``end_session``; a
turn after which the agent waits on a tool has ``pause_session`` (the runtime knows a tool call is in
flight) and ``resume_in``, the runtime's estimate of the seconds the tool takes: the true time off by
a log-normal factor (``estimate_spread`` its sigma; at 1.0 a third of the estimates are off by more
than a factor of e), as an estimate from the tool's past run times would be.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
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
    estimate_spread: float = 1.0  # sigma of log(estimated / true tool time)
    block_tokens: int = 512
    seed: int = 0


def generate(params: AgentTraceParams = AgentTraceParams()) -> list[Request]:
    """The trace, requests in time order; sessions start as others end, ``concurrency`` at a time."""
    rng = random.Random(params.seed)
    guess = random.Random(params.seed + 1)  # the runtime's estimates, apart: the trace stays the same
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
            tool = rng.random() < params.tool_share
            gap = rng.randint(*params.tool_ms) if tool else rng.randint(*params.think_ms)
            paused = tool and not last
            estimate = gap / 1000 * math.exp(guess.gauss(0.0, params.estimate_spread)) if paused else 0.0
            req = Request(
                timestamp=t,
                input_length=len(prompt) * params.block_tokens,
                hash_ids=tuple(prompt),
                output_length=output,
                session=f"s{s}",
                end_session=last,
                pause_session=paused,
                resume_in=round(estimate, 3),
            )
            events.append((t, len(events), req))
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
    if r.pause_session:
        out["pause_session"] = True
    if r.resume_in:
        out["resume_in"] = r.resume_in
    return out


def params_json(params: AgentTraceParams) -> dict[str, Any]:
    return dataclasses.asdict(params)


if __name__ == "__main__":
    write(sys.argv[1], generate())


def run_agent(args: Any) -> dict[str, Any]:
    """``python bench/run.py replay --agent``: every policy on a generated agent trace without hints,
    with its session ends, with its ends and pauses, with the pauses' return estimates too, and with
    every estimate exact (a bound), next to OPT, at the ``--capacity`` fractions of distinct
    blocks."""
    from tqdm import tqdm

    from bench.common import print_table, write_result
    from memstore.policy import POLICIES
    from memstore.replay import replay

    params = AgentTraceParams(sessions=120 if args.quick else AgentTraceParams.sessions)
    trace = generate(params)
    ends_only = [dataclasses.replace(r, pause_session=False, resume_in=0.0) for r in trace]
    no_estimates = [dataclasses.replace(r, resume_in=0.0) for r in trace]
    exact = generate(dataclasses.replace(params, estimate_spread=0.0))  # a bound: every return foreknown
    distinct = len({h for r in trace for h in r.hash_ids})
    fractions = [float(x) for x in args.capacity.split(",")]
    rows: list[dict[str, Any]] = []
    bt = params.block_tokens
    for frac in fractions:
        cap = max(1, int(distinct * frac))
        opt = replay(trace, "opt", cap, block_tokens=bt).prefix_hit_ratio
        for name in tqdm(list(POLICIES), desc=f"agent replay @{frac:g}", unit="policy"):
            rows.append(
                {
                    "capacity": frac,
                    "blocks": cap,
                    "policy": name,
                    "no_hints": replay(trace, name, cap, block_tokens=bt).prefix_hit_ratio,
                    "ends": replay(ends_only, name, cap, block_tokens=bt, hints=True).prefix_hit_ratio,
                    "hints": replay(no_estimates, name, cap, block_tokens=bt, hints=True).prefix_hit_ratio,
                    "estimates": replay(trace, name, cap, block_tokens=bt, hints=True).prefix_hit_ratio,
                    "return_oracle": replay(exact, name, cap, block_tokens=bt, hints=True).prefix_hit_ratio,
                    "opt": opt,
                }
            )
    columns = ("no_hints", "ends", "hints", "estimates", "return_oracle")
    print_table(rows, ["capacity", "blocks", "policy", *columns, "opt"])
    summary: dict[str, Any] = {
        "trace_params": params_json(params),
        "requests": len(trace),
        "distinct_blocks": distinct,
    }
    for frac in fractions:
        at = [r for r in rows if r["capacity"] == frac]
        best = {c: max(at, key=lambda r: r[c]) for c in columns}
        summary[f"@{frac:g}"] = {
            "opt": at[0]["opt"],
            "best_with_estimates": [best["estimates"]["policy"], best["estimates"]["estimates"]],
            "best_with_hints": [best["hints"]["policy"], best["hints"]["hints"]],
            "best_with_ends_only": [best["ends"]["policy"], best["ends"]["ends"]],
            "best_without_hints": [best["no_hints"]["policy"], best["no_hints"]["no_hints"]],
            "best_with_return_oracle": [
                best["return_oracle"]["policy"],
                best["return_oracle"]["return_oracle"],
            ],
            "points_below_opt_with_hints": round(100 * (at[0]["opt"] - best["hints"]["hints"]), 2),
            "points_below_opt_with_estimates": round(
                100 * (at[0]["opt"] - best["estimates"]["estimates"]), 2
            ),
        }
        figures = "; ".join(f"{c} {best[c][c]:.3f} ({best[c]['policy']})" for c in best)
        print(f"@{frac:g}: OPT {at[0]['opt']:.3f}; best {figures}")
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

    fig, axes = plt.subplots(1, len(fractions), figsize=(4.5 * len(fractions), 4.4), squeeze=False)
    for ax, frac in zip(axes[0], fractions, strict=True):
        at = [r for r in rows if r["capacity"] == frac]
        x = range(len(at))
        series = (
            ("no_hints", "no hints"),
            ("ends", "session ends"),
            ("hints", "ends and pauses"),
            ("estimates", "... with return estimates"),
        )
        for j, (column, label) in enumerate(series):
            ax.bar([i + 0.2 * (j - 1.5) for i in x], [r[column] for r in at], 0.2, label=label)
        ax.axhline(at[0]["opt"], color="k", linestyle="--", label="OPT")
        ax.set_xticks(list(x), [r["policy"] for r in at], rotation=45, ha="right")
        ax.set_title(f"cache = {frac:g} of distinct blocks")
        ax.set_ylabel("token prefix hit ratio")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
