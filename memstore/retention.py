"""Retention hints: what callers know of a block's future, used before the eviction policy's own order.

A put or a lookup may carry a ``Hint``: a lifetime (``ttl`` seconds, as prompt-caching APIs let a
caller ask for 5 minutes or an hour), a ``priority`` and a ``session`` id that the caller later ends
(``end_session``), or pauses while it waits on a tool call or its user (``pause_session``, with the
caller's estimate of when it comes back where it has one; the next hint that names the session resumes
it). When a tier needs room:

1. first to go are blocks whose lifetime passed, blocks hinted with a negative priority, and blocks
   whose every session has ended (a shared prefix stays while any session that used it is open);
2. then the policy's own order, passing over blocks that are protected: a positive priority, a
   lifetime that has not passed, or an open session (past at most ``SCAN`` of them: where the order
   starts with more, step 3 comes first and this step's walk goes on only if nothing waits);
3. then blocks whose every open session is paused: first those of sessions paused with no estimate of
   their return, the session paused first going first; then those whose sessions all said when they
   come back, the latest return first (a block shared by several waits for the earliest). Within a
   session its tail goes before its head, so what stays of it is a prefix;
4. only when nothing else is left, the policy's order over the protected blocks too.

Blocks never hinted keep exactly the policy's order. Sans-IO: keys are any hashables and time comes
from the caller's clock, so the replay simulator uses the same rules as the store.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Hashable, Iterable
from dataclasses import dataclass

from memstore.errors import InvalidValueError

SCAN = 1024  # doomed keys looked at per victim choice
MAX_SESSION = 256  # bytes, a server's tenant prefix included (callers' own ids: 128)
MAX_TTL = 30 * 86400.0


class _Enough(Exception):
    """Raised by the skip predicate to end a policy's walk (policies leave their order as it was)."""


@dataclass(frozen=True, slots=True)
class Hint:
    ttl: float = 0.0  # seconds the caller wants the block kept; 0: no lifetime
    priority: int = 0  # > 0: kept before unhinted blocks; < 0: given up before them
    session: str = ""  # a session the block belongs to, ended later by end_session

    def __post_init__(self) -> None:
        if not (0.0 <= self.ttl <= MAX_TTL):
            raise InvalidValueError(f"a hint's ttl is 0 to {MAX_TTL:.0f} seconds, not {self.ttl}")
        if not -1000 <= self.priority <= 1000:
            raise InvalidValueError("a hint's priority is -1000 to 1000")
        if len(self.session.encode()) > MAX_SESSION:
            raise InvalidValueError(f"a session id is at most {MAX_SESSION} bytes")

    @property
    def empty(self) -> bool:
        return not (self.ttl or self.priority or self.session)


class Retention:
    """The hints in force, by key. Callers serialise access (the store's lock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.priority: dict[Hashable, int] = {}
        self.expires: dict[Hashable, float] = {}
        self._deadlines: list[tuple[float, int, Hashable]] = []  # a heap of (expiry, seq, key)
        self._seq = 0
        self.sessions: dict[str, dict[Hashable, None]] = {}  # open sessions and their keys, in order
        self.open_of: dict[Hashable, set[str]] = {}  # key -> its open sessions
        self.paused: set[str] = set()  # open sessions that wait
        self.doomed: OrderedDict[Hashable, str] = OrderedDict()  # key -> why it goes first
        self.idle: OrderedDict[Hashable, None] = OrderedDict()  # keys only paused sessions hold
        self.back_at: dict[str, float] = {}  # paused sessions that said when they come back
        # keys whose every open session is paused with a return time, sorted by (-return, seq); an
        # entry is live while ``waiting_of`` holds its (-return, seq)
        self.waiting: list[tuple[float, int, Hashable]] = []
        self.waiting_of: dict[Hashable, tuple[float, int]] = {}

    def __bool__(self) -> bool:
        return bool(self.priority or self.expires or self.open_of or self.doomed)

    # ---- what callers say ----

    def hint(self, keys: Iterable[Hashable], hint: Hint) -> None:
        if hint.empty:
            return
        now = self.clock()
        for key in keys:
            self.doomed.pop(key, None)  # asked for again: whatever doomed it is over
            self._unwait(key)
            if hint.priority:
                self.priority[key] = hint.priority
                if hint.priority < 0:
                    self.doomed[key] = "priority"
            if hint.ttl:
                until = now + hint.ttl
                if until > self.expires.get(key, 0.0):
                    self.expires[key] = until
                    self._seq += 1
                    heapq.heappush(self._deadlines, (until, self._seq, key))
            if hint.session:
                self.sessions.setdefault(hint.session, {})[key] = None
                self.open_of.setdefault(key, set()).add(hint.session)
        if hint.session in self.paused:  # it is back: none of its keys waits any more
            self.paused.discard(hint.session)
            self.back_at.pop(hint.session, None)
            for key in self.sessions[hint.session]:
                self._unwait(key)

    def end_session(self, session: str) -> int:
        """End a session: its keys that no open session shares go first. Returns how many that made."""
        doomed = 0
        self.paused.discard(session)
        self.back_at.pop(session, None)
        for key in self.sessions.pop(session, {}):
            left = self.open_of.get(key)
            if left is None:
                continue
            left.discard(session)
            if not left:
                del self.open_of[key]
                self._unwait(key)
                if self.priority.get(key, 0) <= 0:
                    self.doomed[key] = "ended"
                    self.expires.pop(key, None)
                    doomed += 1
            elif left <= self.paused and self._yields(key):
                self._wait(key)
        return doomed

    def pause_session(self, session: str, resume_in: float | None = None) -> int:
        """The session waits: until a hint names it again, its keys that no running session shares go
        after unprotected blocks and before running sessions'. ``resume_in``: the caller's estimate of
        the seconds until it comes back (a tool's usual run time), which orders it among the waiting.
        Returns how many keys began to wait."""
        if resume_in is not None and not 0.0 <= resume_in <= MAX_TTL:
            raise InvalidValueError(f"a pause's resume_in is 0 to {MAX_TTL:.0f} seconds, not {resume_in}")
        keys = self.sessions.get(session)
        if keys is None:
            return 0
        self.paused.add(session)
        if resume_in is None:
            self.back_at.pop(session, None)
        else:
            self.back_at[session] = self.clock() + resume_in
        idle = 0
        for key in reversed(keys):  # tail first
            if self.open_of.get(key, set()) <= self.paused and self._yields(key):
                idle += not self.waits(key)
                self._wait(key)
        return idle

    def waits(self, key: Hashable) -> bool:
        """Whether ``key`` waits on paused sessions (step 3 of the order)."""
        return key in self.idle or key in self.waiting_of

    def _wait(self, key: Hashable) -> None:
        """``key``, held only by paused sessions, waits: by return time if they all gave one."""
        backs = [self.back_at.get(s) for s in self.open_of.get(key, ())]
        if not backs or None in backs:
            self.waiting_of.pop(key, None)
            self.idle.setdefault(key, None)  # one already waiting keeps its place
            return
        self.idle.pop(key, None)
        rank = -min(b for b in backs if b is not None)
        if self.waiting_of.get(key, (math.nan,))[0] == rank:
            return
        self._seq += 1
        self.waiting_of[key] = (rank, self._seq)
        bisect.insort(self.waiting, (rank, self._seq, key))
        if len(self.waiting) > 2 * len(self.waiting_of) + 64:  # drop entries no longer live
            self.waiting = [e for e in self.waiting if self._live(e)]

    def _unwait(self, key: Hashable) -> None:
        self.idle.pop(key, None)
        self.waiting_of.pop(key, None)

    def _yields(self, key: Hashable) -> bool:
        """Neither a positive priority nor a lifetime not yet passed keeps ``key``."""
        return self.priority.get(key, 0) <= 0 and key not in self.expires

    def forget(self, key: Hashable) -> None:
        """The key left the store: drop what is known of it."""
        self.priority.pop(key, None)
        self.expires.pop(key, None)
        self.doomed.pop(key, None)
        self._unwait(key)
        for session in self.open_of.pop(key, set()):
            self.sessions.get(session, {}).pop(key, None)

    # ---- what eviction asks ----

    def _expire(self) -> None:
        now = self.clock()
        while self._deadlines and self._deadlines[0][0] <= now:
            until, _, key = heapq.heappop(self._deadlines)
            if self.expires.get(key) == until:
                del self.expires[key]
                if self.priority.get(key, 0) > 0:
                    continue
                sessions = self.open_of.get(key)
                if not sessions:
                    self.doomed[key] = "expired"
                elif sessions <= self.paused:
                    self._wait(key)

    def protected(self, key: Hashable) -> bool:
        return self.priority.get(key, 0) > 0 or key in self.expires or bool(self.open_of.get(key))

    def reason(self, key: Hashable) -> str:
        """Why ``key`` would go before the policy's order says ("expired", "ended", "priority",
        "paused"), or ""."""
        return self.doomed.get(key, "") or ("paused" if self.waits(key) else "")

    def victim(
        self,
        policy_victim: Callable[[Callable[[Hashable], bool], Hashable | None], Hashable | None],
        skip: Callable[[Hashable], bool],
        held: Container[Hashable],
        incoming: Hashable | None = None,
    ) -> Hashable | None:
        """The key to give up next among ``held`` (a tier's keys): hints first, then the policy."""
        if not self:
            return policy_victim(skip, incoming)
        self._expire()
        # At most SCAN looks a call, moving each key passed over to the back: a tier whose doomed keys
        # are few among many doomed elsewhere does not walk them all on every eviction.
        for _ in range(min(len(self.doomed), SCAN)):
            key = next(iter(self.doomed))
            if key in held and key != incoming and not skip(key):
                return key
            self.doomed.move_to_end(key)
        # The policy's order past protected keys, at most SCAN of them: a tier whose blocks are all in
        # open sessions gives up a paused one without first walking every block it holds.
        looked = 0

        def passed(key: Hashable) -> bool:
            nonlocal looked
            if skip(key):
                return True
            if not self.protected(key):
                return False
            looked += 1
            if looked > SCAN:
                raise _Enough
            return True

        try:
            found, walked = policy_victim(passed, incoming), True
        except _Enough:
            found, walked = None, False
        if found is not None:
            return found
        for _ in range(min(len(self.idle), SCAN)):
            key = next(iter(self.idle))
            if key in held and key != incoming and not skip(key):
                return key
            self.idle.move_to_end(key)
        stale = 0  # entries no longer live at the front go for good
        while stale < len(self.waiting) and not self._live(self.waiting[stale]):
            stale += 1
        del self.waiting[:stale]
        for rank, seq, key in self.waiting[:SCAN]:  # the latest return first
            if self._live((rank, seq, key)) and key in held and key != incoming and not skip(key):
                return key
        if not walked:  # nothing waits: the rest of the order past protected keys after all
            found = policy_victim(lambda k: skip(k) or self.protected(k), incoming)
            if found is not None:
                return found
        return policy_victim(skip, incoming)

    def _live(self, entry: tuple[float, int, Hashable]) -> bool:
        return self.waiting_of.get(entry[2]) == entry[:2]
