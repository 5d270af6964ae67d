"""Mutation testing of the promises: break the code on purpose and check that the named tests fail.

    python3 scripts/mutate.py              every mutant below
    python3 scripts/mutate.py ID [ID ...]  only these
    python3 scripts/mutate.py --list       the mutants, one line each

Each mutant replaces one exact piece of code (found exactly once in its file) in a copy of the working
tree, then runs the tests named for it against that copy; the mutant is caught when they fail. The copy
comes first on PYTHONPATH, so child processes (``memstore serve``, the CLI) run the mutant too. The
table says caught or MISSED per mutant; the exit status is 1 if any was missed. Add a mutant by adding
an entry to MUTANTS: the promise it breaks, the file, the code and its replacement, and the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Mutant:
    id: str
    promise: str
    path: str
    find: str
    replace: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant(
        "dataplane-role-unchecked",
        "data plane: a read-only credential cannot PUT",
        "server/memstore_server/dataplane.py",
        "            if ROLES[principal.role] < ROLES[need]:",
        "            if False:",
        ("tests/test_dataplane.py::test_tenants_roles_and_revocation_on_the_data_plane",),
    ),
    Mutant(
        "dataplane-ticket-any",
        "data plane: a HELLO needs a ticket OpenData issued",
        "server/memstore_server/dataplane.py",
        "        if entry is None or entry[0] < time.monotonic():\n            return None",
        "        if entry is None:\n            return next(iter(self._open.values()))[1:]\n"
        "        if entry[0] < time.monotonic():\n            return None",
        ("tests/test_dataplane.py::test_frames_that_break_the_protocol_close_only_their_connection",),
    ),
    Mutant(
        "dataplane-lying-length-read",
        "data plane: a frame's declared data length is bounded before any byte is read",
        "memstore/dataplane.py",
        "    if data_len > max_data:",
        "    if False:",
        ("tests/test_dataplane.py::test_frames_that_break_the_protocol_close_only_their_connection",),
    ),
    Mutant(
        "pool-same-host-publish",
        "pool: values put through the same-host path are published like any put",
        "memstore/reservation.py",
        "            if store.pool is not None:  # shared namespaces' values go to the pool, as put's do",
        "            if False:",
        ("tests/test_pool.py::test_kv_blocks_computed_on_one_server_are_found_by_another",),
    ),
    Mutant(
        "pool-dead-node-breaks-all",
        "pool: a failing cluster node costs only its own keys",
        "memstore/pool.py",
        "                self._failed(name, exc)\n                continue",
        "                self._failed(None, exc)\n                continue",
        ("tests/test_pool.py::test_a_dead_node_costs_only_its_own_keys",),
    ),
    Mutant(
        "vllm-consumer-stores",
        "vLLM: a kv_consumer loads and never stores",
        "memstore/adapters/vllm.py",
        "            if self.stores and done > first:",
        "            if done > first:",
        ("tests/test_vllm_connector.py::test_a_producer_only_stores_and_a_consumer_only_loads",),
    ),
    Mutant(
        "cold-compressed-checksum",
        "integrity: compressed cold records are checksummed before decoding",
        "memstore/readpath.py",
        "    verify_payload(payload, seed, digest)\n    raw = decode_payload(payload, meta)",
        "    raw = decode_payload(payload, meta)",
        ("tests/test_corruption.py",),
    ),
    Mutant(
        "cold-raw-checksum",
        "integrity: raw cold records are checksummed",
        "memstore/readpath.py",
        "        verify_payload(copy, seed, digest)\n        return meta, copy",
        "        return meta, copy",
        ("tests/test_corruption.py",),
    ),
    Mutant(
        "no-fsync",
        "persistent writes are acknowledged after a synced commit",
        "memstore/cold.py",
        "        if any(op.durable for op in batch):\n            self.env.sync(True)",
        "        if any(op.durable for op in batch):\n            pass",
        ("tests/test_durability.py::test_every_persistent_acknowledgement_follows_a_synced_commit",),
    ),
    Mutant(
        "overwrite-keeps-old",
        "an overwritten cache value never comes back after a crash",
        "memstore/movement.py",
        "        stale = self.drop_cold(fk, durable=False)  # an older value must not outlive a crash",
        "        stale = None",
        ("tests/test_durability.py::test_an_overwritten_value_never_comes_back_after_kill9",),
    ),
    Mutant(
        "restart-reads-records",
        "a restart reads keys, not values",
        "memstore/cold.py",
        "        if not complete:  # a data dir from before the lengths were kept: build them once",
        "        if True:",
        ("tests/test_durability.py::test_a_restart_reads_the_keys_not_the_values",),
    ),
    Mutant(
        "local-no-checksum",
        "the local path accepts a copy only with a matching checksum",
        "memstore/local.py",
        "        try:\n            verify_payload(dst, seed, digest)\n        except CorruptRecordError:\n"
        "            return None\n        return meta, dst",
        "        return meta, dst",
        ("tests/test_local.py",),
    ),
    Mutant(
        "local-no-second-generation",
        "the local path accepts a copy only with an unchanged slot generation",
        "memstore/local.py",
        "            dst[:] = payload\n"
        "        if self.generation(slot) != generation:\n            return None",
        "            dst[:] = payload",
        ("tests/test_local.py",),
    ),
    Mutant(
        "reservation-owner",
        "a reservation serves only the caller that made it",
        "memstore/reservation.py",
        "            if r is None or r.owner != owner:\n                raise UnknownReservationError",
        "            if r is None:\n                raise UnknownReservationError",
        (
            "tests/test_fuzz_paths.py",
            "tests/test_adversary.py::test_the_local_path_is_admin_only_and_publishes_only_what_its_maker_wrote",
        ),
    ),
    Mutant(
        "commit-checksum",
        "a commit publishes only the bytes whose checksum the writer sent",
        "memstore/reservation.py",
        "if checksums is not None and xxhash.xxh3_64_intdigest(payload) != checksums[i]:",
        "if False:",
        ("tests/test_fuzz_paths.py",),
    ),
    Mutant(
        "local-path-write-role",
        "only admin callers may use the local path",
        "server/memstore_server/auth.py",
        '    "LocalPutBegin": "admin",',
        '    "LocalPutBegin": "write",',
        (
            "tests/test_adversary.py::test_the_local_path_is_admin_only_and_publishes_only_what_its_maker_wrote",
        ),
    ),
    Mutant(
        "tenant-dropped",
        "no tenant reaches another tenant's namespaces",
        "memstore/tenancy.py",
        '    return name if tenant == DEFAULT_TENANT else f"{tenant}{USER_SEP}{name}"',
        "    return name",
        ("tests/test_auth.py",),
    ),
    Mutant(
        "kv-keys-unchained",
        "a KV block key depends on every token before it (the key spec)",
        "memstore/kv.py",
        "h = hashlib.sha256(h + le[i * block_tokens : (i + 1) * block_tokens].tobytes() + extra)",
        "h = hashlib.sha256(le[i * block_tokens : (i + 1) * block_tokens].tobytes() + extra)",
        ("tests/test_kv.py",),
    ),
    Mutant(
        "hot-header-unchecked",
        "integrity: a hot read finds the record's header in the arena as it was written",
        "memstore/hot.py",
        "        if self.view[entry.offset : start] != entry.header:",
        "        if False:",
        ("tests/test_corruption.py",),
    ),
    Mutant(
        "explain-other-tenants",
        "tenancy: explain compares an identity with the caller's own tenant's namespaces only",
        "memstore/explain.py",
        "who.tenant != me.tenant or ",
        "",
        ("tests/test_explain.py",),
    ),
    Mutant(
        "explain-eviction-unnoted",
        "explain: a key evicted from cold is reported as evicted, by its policy",
        "memstore/movement.py",
        '        self.removals.note(fk, reason, "cold", policy=self.cold.policy.name, detail=detail)\n',
        "",
        ("tests/test_explain.py",),
    ),
    Mutant(
        "langgraph-refresh-always",
        "LangGraph: a read with refresh_ttl=False leaves the TTL as it was",
        "memstore/adapters/langgraph.py",
        '        return bool(asked) and bool(config.get("refresh_on_read", False))',
        '        return bool(config.get("refresh_on_read", False))',
        ("tests/test_langgraph_adapter.py",),
    ),
    Mutant(
        "retention-ignored",
        "retention: a tier gives up what hints name first, before the policy's choice",
        "memstore/tier.py",
        "        if self.retention is not None:\n            return self.retention.victim(",
        "        if False:\n            return self.retention.victim(",
        ("tests/test_retention.py",),
    ),
    Mutant(
        "retention-shared-prefix-dropped",
        "retention: a block an open session still uses stays when another session ends",
        "memstore/retention.py",
        "            left.discard(session)\n            if not left:",
        "            left.discard(session)\n            if True:",
        ("tests/test_retention.py",),
    ),
    Mutant(
        "retention-pause-never-resumed",
        "retention: a paused session's next hint brings its blocks back into the running order",
        "memstore/retention.py",
        "        if hint.session in self.paused:",
        "        if False:",
        ("tests/test_retention.py",),
    ),
    Mutant(
        "retention-paused-before-unhinted",
        "retention: a paused session's blocks go after unhinted ones, before running sessions'",
        "memstore/retention.py",
        "            found, walked = policy_victim(passed, incoming), True",
        "            found, walked = None, True",
        ("tests/test_retention.py",),
    ),
    Mutant(
        "retention-pause-head-first",
        "retention: a paused session loses its tail before its head, so what stays is a prefix",
        "memstore/retention.py",
        "        for key in reversed(keys):  # tail first",
        "        for key in keys:  # tail first",
        ("tests/test_retention.py",),
    ),
    Mutant(
        "retention-estimate-soonest-first",
        "retention: of sessions that said when they come back, the latest return waits least",
        "memstore/retention.py",
        "        rank = -min(b for b in backs if b is not None)",
        "        rank = min(b for b in backs if b is not None)",
        ("tests/test_retention.py",),
    ),
    Mutant(
        "retention-walks-every-protected-key",
        "retention: a tier of open sessions finds a paused block without walking every block it holds",
        "memstore/retention.py",
        "            if looked > SCAN:\n                raise _Enough",
        "            if False:\n                raise _Enough",
        ("tests/test_retention.py",),
    ),
    Mutant(
        "policy-walk-loses-entries",
        "policies: a walk that skip ends leaves the order as it was",
        "memstore/prefix_policy.py",
        "    finally:  # skip may raise: what was taken out goes back\n        for entry in held:\n"
        "            heapq.heappush(heap, entry)",
        "    except ZeroDivisionError:\n        pass\n"
        "    for entry in held:\n        heapq.heappush(heap, entry)",
        ("tests/test_policies.py",),
    ),
    Mutant(
        "policy-order-of-every-key-not-kept",
        "policies: the order of every key, once a walk has built it, follows later uses and inserts",
        "memstore/prefix_policy.py",
        "        if self._all is not None:\n"
        "            self._all = _pushed(self._all, self._entry(key), len(self._uses)",
        "        if False:\n            self._all = _pushed(self._all, self._entry(key), len(self._uses)",
        ("tests/test_policies.py",),
    ),
    Mutant(
        "prefix-slru-leaf-forgotten",
        "policies: prefix-slru's parent whose last child goes is a leaf it can give up",
        "memstore/prefix_policy.py",
        "                if self._tracked(parent):  # it became a leaf",
        "                if False:",
        ("tests/test_policies.py",),
    ),
    Mutant(
        "prefix-slru-stale-place",
        "policies: prefix-slru's leaves go in their segment's order after a hit moves one",
        "memstore/prefix_policy.py",
        "        elif key in self._protected:\n            del self._protected[key]\n"
        "            self._placed(key, True)",
        "        elif key in self._protected:\n            self._protected.move_to_end(key)",
        ("tests/test_policies.py",),
    ),
    Mutant(
        "compactor-oldest-first",
        "compactor: warm's newest raw records are compressed first",
        "memstore/compactor.py",
        "            fk = self._queue.pop()  # the newest",
        "            fk = self._queue.popleft()",
        ("tests/test_compactor.py",),
    ),
    Mutant(
        "compactor-forgets-dropped",
        "compactor: records that fell off a full queue are compressed all the same",
        "memstore/compactor.py",
        "            self._dropped = self._dropped or len(self._queue) == QUEUE",
        "            self._dropped = False",
        ("tests/test_compactor.py",),
    ),
    Mutant(
        "retention-estimate-dropped",
        "retention: a pause's return estimate reaches the store over gRPC",
        "server/memstore_server/servicer.py",
        "pause=req.pause, resume_in=req.resume_in_seconds or None",
        "pause=req.pause, resume_in=None",
        ("tests/test_retention.py",),
    ),
]


def _copy_tree(dst: str) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, rel))


def run_mutant(m: Mutant, timeout: float = 900, *, apply: bool = True) -> tuple[str, float]:
    """'caught', 'MISSED' or 'broken: why' for one mutant, and the seconds its tests took. With
    ``apply=False`` the same tests run on the unmutated copy: they must pass ('MISSED')."""
    with tempfile.TemporaryDirectory(prefix=f"memstore-mutant-{m.id}-") as tree:
        _copy_tree(tree)
        target = os.path.join(tree, m.path)
        with open(target) as f:
            text = f.read()
        if text.count(m.find) != 1:
            return f"broken: the code to replace occurs {text.count(m.find)} times in {m.path}", 0.0
        with open(target, "w") as f:
            f.write(text.replace(m.find, m.replace) if apply else text)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [tree, os.path.join(tree, "server"), os.environ.get("PYTHONPATH", "")]
            ),
        }
        vllm = os.path.join(ROOT, ".venv-vllm", "bin", "python")  # the copy has no vLLM environment:
        if "MEMSTORE_VLLM_PYTHON" not in env and os.path.exists(vllm):  # the checkout's runs the copy
            env["MEMSTORE_VLLM_PYTHON"] = vllm  # (PYTHONPATH puts the mutant first there too)
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *m.tests]
        t0 = time.monotonic()
        try:
            out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "caught (the tests hung)", time.monotonic() - t0
        took = time.monotonic() - t0
        if out.returncode == 1:
            return "caught", took
        if out.returncode == 0:
            return "MISSED", took
        return f"broken: pytest exited {out.returncode}: {out.stdout[-300:]}", took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ids", nargs="*", help="mutant ids (all by default)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="run each mutant's tests on the unmutated copy (all must pass)",
    )
    args = ap.parse_args()
    by_id = {m.id: m for m in MUTANTS}
    if args.list:
        for m in MUTANTS:
            print(f"{m.id:28} {m.promise}  [{' '.join(m.tests)}]")
        return 0
    unknown = [i for i in args.ids if i not in by_id]
    if unknown:
        print(f"unknown mutants: {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    chosen = [by_id[i] for i in args.ids] if args.ids else MUTANTS
    missed = 0
    print(f"{'mutant':28} {'result':10} {'tests s':>8}  promise")
    for m in chosen:
        result, took = run_mutant(m, apply=not args.baseline)
        if args.baseline:
            result = "passes" if result == "MISSED" else f"FAILS unmutated ({result})"
            missed += result != "passes"
        else:
            missed += not result.startswith("caught")
        print(f"{m.id:28} {result:10} {took:8.1f}  {m.promise}", flush=True)
    print(f"{len(chosen) - missed} of {len(chosen)} {'pass unmutated' if args.baseline else 'caught'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
