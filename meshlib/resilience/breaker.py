"""A circuit breaker for guarding any ``async`` call (``mesh.breaker("name")``).

:class:`AsyncBreaker` wraps a :class:`pybreaker.CircuitBreaker` (memory storage)
and makes it safe and correct for asyncio. Use it as a decorator on an
``async def`` or as an ``async with`` block::

    >>> import asyncio
    >>> from meshlib.resilience.breaker import AsyncBreaker, BreakerOpen
    >>> breaker = AsyncBreaker("db", fail_max=2, reset_timeout_s=30.0)
    >>> @breaker
    ... async def query() -> str:
    ...     raise ConnectionError("db down")
    >>> async def main() -> list[str]:
    ...     seen = []
    ...     for _ in range(3):
    ...         try:
    ...             await query()
    ...         except BreakerOpen:
    ...             seen.append("rejected")  # open: query() was not called
    ...         except ConnectionError:
    ...             seen.append("failed")
    ...     try:
    ...         async with breaker:  # guards a block the same way
    ...             seen.append("block ran")
    ...     except BreakerOpen:
    ...         seen.append("block rejected")
    ...     return seen
    >>> asyncio.run(main())
    ['failed', 'failed', 'rejected', 'block rejected']
    >>> breaker.state, breaker.failure_count
    ('open', 2)

Semantics
---------
* **closed** – calls run; an exception counts as a failure unless it matches
  ``exclude`` (exception types or predicates, exactly as pybreaker's
  ``exclude``). As in pybreaker, an excluded exception counts as a *success*
  (the dependency answered) and resets the consecutive-failure count. A success
  resets the count; ``fail_max`` consecutive failures open the circuit. The call
  that trips the circuit re-raises its own exception (it did run).
* **open** – calls raise :class:`BreakerOpen` immediately; the guarded function
  is not called.
* **half-open** – once ``reset_timeout_s`` has passed on the breaker's clock,
  exactly **one** caller is admitted as the probe; concurrent callers get
  :class:`BreakerOpen` until the probe finishes. Probe success closes the
  circuit, probe failure re-opens it (and restarts the timeout).
* ``asyncio.CancelledError`` (and any other ``BaseException`` that is not an
  ``Exception``: ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``) is
  neither a success nor a failure; a cancelled probe frees the probe slot and
  the next caller becomes the probe.
* Outcomes of calls admitted in an earlier state period (e.g. a slow call
  admitted while closed that finishes after the circuit opened) are counted in
  :meth:`AsyncBreaker.stats` and reported to listeners, but do not move the
  state machine: only calls of the current period, and only the probe in
  half-open, decide transitions.

How pybreaker is used, and why not ``call()`` / ``calling()``
-------------------------------------------------------------
Read from pybreaker 1.4.1's source:

* ``CircuitBreaker.call()`` holds the breaker's ``threading.RLock`` for the
  whole guarded call, and ``@cb`` on an ``async def`` returns the coroutine
  unawaited (failures never counted). ``call_async`` needs Tornado.
* ``calling()`` is ``yield from self.call(_wrapper)``: the lock is held only
  while the block is *entered* (``call`` returns an un-started generator), not
  across the ``with`` body, so it would not block the loop. But it cannot
  express our semantics: in half-open every concurrent caller is let through;
  a ``CancelledError`` thrown into it counts as a failure (or as a success if
  excluded), and abandoning the context manager counts a failure when the
  generator is closed (``GeneratorExit`` is caught as ``BaseException``).

So :class:`AsyncBreaker` drives pybreaker's state machine itself, with its
public pieces: the ``CircuitMemoryStorage`` it owns (``state``, ``counter``,
``increment_counter()``, ``reset_counter()``), ``CircuitBreaker.open()``,
``half_open()``, ``close()``, ``is_system_error()``, ``fail_max`` and
``listeners``. pybreaker therefore still owns the state, the failure counter,
the exclusion rules and the ``state_change`` notifications (listeners passed in
see ``closed → open → half-open → closed`` from pybreaker itself), while
admission (one probe) and outcome accounting are ours. The bookkeeping on entry
and on exit takes pybreaker's own ``RLock`` (the one ``open()``/``close()``
take, so there is a single lock and no lock-ordering hazard) for a few
microseconds and **never across an ``await``**. ``before_call``, ``success``
and ``failure`` are sent to listeners the way pybreaker sends them (for a
context-manager block, ``func`` is a placeholder named ``guarded_block``).

The open → half-open decision uses the breaker's ``clock`` (default
:func:`time.monotonic`), not pybreaker's ``datetime.now``, so tests can inject a
fake clock and never sleep. Do not call ``circuit.call()`` on the underlying
breaker directly: that path uses pybreaker's own timing and locking.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import math
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypedDict, TypeVar, cast

import pybreaker

from meshlib.errors import MeshError

__all__ = [
    "AsyncBreaker",
    "BreakerOpen",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStats",
    "Clock",
    "Exclusion",
]

P = ParamSpec("P")
R = TypeVar("R")

BreakerState = Literal["closed", "open", "half-open"]
Clock = Callable[[], float]
Exclusion = type[BaseException] | Callable[[BaseException], bool]


class BreakerOpen(pybreaker.CircuitBreakerError, MeshError):
    """The circuit is open (or half-open with its probe in flight): the call was not made.

    ``retry_after_s`` is how long until a probe may be admitted (``0.0`` when a
    probe is already in flight and the answer depends on it).
    """

    def __init__(self, name: str, retry_after_s: float) -> None:
        self.name = name
        self.retry_after_s = retry_after_s
        if retry_after_s > 0:
            msg = f"circuit breaker {name!r} is open (retry in {retry_after_s:.3f}s)"
        else:
            msg = f"circuit breaker {name!r} is half-open and its probe is in flight"
        super().__init__(msg)


class BreakerStats(TypedDict):
    """What :meth:`AsyncBreaker.stats` returns."""

    name: str
    state: BreakerState
    failures: int  # current consecutive failures (what trips the breaker)
    fail_max: int
    reset_timeout_s: float
    opened_at: float | None  # breaker-clock time the circuit last opened; None while closed
    calls: int  # admitted calls (rejections are not calls)
    successes: int
    failures_total: int  # counted failures over the breaker's life
    excluded: int  # calls that raised an excluded exception (counted as successes)
    cancellations: int  # CancelledError and other non-Exception exits: neither outcome
    rejections: int  # BreakerOpen raised


async def guarded_block() -> None:
    """Placeholder ``func`` passed to listeners' ``before_call`` for ``async with`` blocks."""


# A ticket is (state-period generation, is_probe).
_Ticket = tuple[int, bool]


class _StateTracker(pybreaker.CircuitBreakerListener):
    """Internal first listener: notes every pybreaker state change."""

    def __init__(self, owner: AsyncBreaker) -> None:
        self._owner = owner

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._owner._on_state_change(new_state.name)


class AsyncBreaker:
    """A circuit breaker for ``async`` calls, backed by :class:`pybreaker.CircuitBreaker`.

    Args:
        name: identifies the breaker in errors and stats.
        fail_max: consecutive failures that open the circuit (>= 1).
        reset_timeout_s: how long the circuit stays open before one probe is let through.
        exclude: exception types or predicates ``(exc) -> bool`` that are not failures.
        listeners: :class:`pybreaker.CircuitBreakerListener` instances, passed through.
        clock: monotonic seconds for the reset timeout (default :func:`time.monotonic`).

    Example::

        >>> import asyncio
        >>> b = AsyncBreaker("payments", fail_max=3, reset_timeout_s=10.0)
        >>> @b
        ... async def charge(cents: int) -> int:
        ...     return cents
        >>> async def main() -> int:
        ...     async with b:                 # guards a block
        ...         pass
        ...     return await charge(100)      # guards a call
        >>> asyncio.run(main())
        100
        >>> b.stats()["calls"], b.state
        (2, 'closed')
    """

    def __init__(
        self,
        name: str,
        *,
        fail_max: int = 5,
        reset_timeout_s: float = 30.0,
        exclude: Iterable[Exclusion] = (),
        listeners: Iterable[pybreaker.CircuitBreakerListener] = (),
        clock: Clock | None = None,
    ) -> None:
        if isinstance(fail_max, bool) or not isinstance(fail_max, int) or fail_max < 1:
            raise ValueError(f"fail_max must be an integer >= 1, got {fail_max!r}")
        if not math.isfinite(reset_timeout_s) or reset_timeout_s < 0:
            raise ValueError(f"reset_timeout_s must be a finite number >= 0, got {reset_timeout_s!r}")
        excl = tuple(exclude)
        for item in excl:
            if not (isinstance(item, type) and issubclass(item, BaseException)) and not callable(item):
                raise TypeError(f"exclude items must be exception types or predicates, got {item!r}")
        user_listeners = tuple(listeners)
        for listener in user_listeners:
            if not isinstance(listener, pybreaker.CircuitBreakerListener):
                raise TypeError(f"listeners must be pybreaker.CircuitBreakerListener, got {listener!r}")

        self._name = name
        self._reset_timeout_s = float(reset_timeout_s)
        self._exclude = excl
        self._listeners = user_listeners
        self._clock: Clock = clock if clock is not None else time.monotonic
        self._clock_given = clock

        self._generation = 0
        self._probe_active = False
        self._opened_at: float | None = None
        self._calls = 0
        self._successes = 0
        self._failures_total = 0
        self._excluded = 0
        self._cancellations = 0
        self._rejections = 0
        self._tickets: contextvars.ContextVar[tuple[_Ticket, ...]] = contextvars.ContextVar(
            f"meshlib.breaker.{name}", default=()
        )

        self._storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self._cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=self._reset_timeout_s,
            exclude=list(excl),
            listeners=[_StateTracker(self), *user_listeners],
            state_storage=self._storage,
            name=name,
            throw_new_error_on_trip=False,
        )
        # pybreaker's own RLock: held only for synchronous bookkeeping, never across an await.
        self._lock: threading.RLock = self._cb._lock

    # -- configuration -------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def fail_max(self) -> int:
        return self._cb.fail_max

    @property
    def reset_timeout_s(self) -> float:
        return self._reset_timeout_s

    @property
    def exclude(self) -> tuple[Exclusion, ...]:
        return self._exclude

    @property
    def listeners(self) -> tuple[pybreaker.CircuitBreakerListener, ...]:
        """The user listeners (not the internal state tracker)."""
        return self._listeners

    @property
    def clock(self) -> Clock | None:
        """The injected clock, or ``None`` when the default (:func:`time.monotonic`) is used."""
        return self._clock_given

    @property
    def circuit(self) -> pybreaker.CircuitBreaker:
        """The underlying pybreaker breaker (for introspection and ``open()``/``close()``)."""
        return self._cb

    # -- state ---------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """``'closed'``, ``'open'`` or ``'half-open'``.

        Reading it performs the due open → half-open transition (so listeners see
        it as soon as anyone looks, not only at the next call).
        """
        with self._lock:
            self._refresh()
            return cast(BreakerState, self._storage.state)

    @property
    def failure_count(self) -> int:
        """Current consecutive failures (pybreaker's ``fail_counter``)."""
        return self._cb.fail_counter

    def stats(self) -> BreakerStats:
        """A snapshot: state, failure count, settings and lifetime counters."""
        with self._lock:
            self._refresh()
            state = cast(BreakerState, self._storage.state)
            return BreakerStats(
                name=self._name,
                state=state,
                failures=self._storage.counter,
                fail_max=self._cb.fail_max,
                reset_timeout_s=self._reset_timeout_s,
                opened_at=None if state == pybreaker.STATE_CLOSED else self._opened_at,
                calls=self._calls,
                successes=self._successes,
                failures_total=self._failures_total,
                excluded=self._excluded,
                cancellations=self._cancellations,
                rejections=self._rejections,
            )

    def __repr__(self) -> str:
        return f"<AsyncBreaker {self._name!r} {self._storage.state} {self._storage.counter}/{self.fail_max}>"

    # -- guarding ------------------------------------------------------------------

    def __call__(self, func: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorate an ``async def`` so every call is guarded (and awaited) by this breaker."""
        if (inspect.isfunction(func) or inspect.ismethod(func)) and not inspect.iscoroutinefunction(func):
            raise TypeError(
                f"AsyncBreaker guards async functions; {func.__qualname__} is not 'async def' "
                "(use pybreaker.CircuitBreaker directly for synchronous code)"
            )

        @functools.wraps(func)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            return await self.call(func, *args, **kwargs)

        return guarded

    async def call(self, func: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``func(*args, **kwargs)`` under the breaker.

        Raises :class:`BreakerOpen` without calling ``func`` when the circuit is open.
        """
        ticket = self._admit()
        try:
            for listener in self._listeners:
                listener.before_call(self._cb, func, *args, **kwargs)
            awaitable = func(*args, **kwargs)
        except BaseException:
            self._release(ticket)
            raise
        try:
            result = await awaitable
        except BaseException as exc:
            self._record_error(ticket, exc)
            raise
        self._record_success(ticket)
        return result

    async def __aenter__(self) -> AsyncBreaker:
        ticket = self._admit()
        try:
            for listener in self._listeners:
                listener.before_call(self._cb, guarded_block)
        except BaseException:
            self._release(ticket)
            raise
        self._tickets.set((*self._tickets.get(), ticket))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = self._tickets.get()
        if not stack:
            raise RuntimeError(f"AsyncBreaker {self._name!r}: __aexit__ without matching __aenter__")
        self._tickets.set(stack[:-1])
        if exc is None:
            self._record_success(stack[-1])
        else:
            self._record_error(stack[-1], exc)

    # -- state machine (all synchronous; callers hold no lock across awaits) ---------

    def _on_state_change(self, new_state: str) -> None:
        # Called by pybreaker (under its RLock) for every transition, ours or external.
        self._generation += 1
        self._probe_active = False
        if new_state == pybreaker.STATE_OPEN:
            self._opened_at = self._clock()

    def _remaining_open_s(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._reset_timeout_s - self._clock())

    def _refresh(self) -> None:
        # Lock held. Perform the due open -> half-open transition.
        if self._storage.state == pybreaker.STATE_OPEN and self._remaining_open_s() <= 0.0:
            self._cb.half_open()

    def _admit(self) -> _Ticket:
        with self._lock:
            state = self._storage.state
            if state == pybreaker.STATE_CLOSED:
                self._calls += 1
                return (self._generation, False)
            if state == pybreaker.STATE_OPEN:
                remaining = self._remaining_open_s()
                if remaining > 0.0:
                    self._rejections += 1
                    raise BreakerOpen(self._name, remaining)
                self._cb.half_open()
            if self._probe_active:
                self._rejections += 1
                raise BreakerOpen(self._name, 0.0)
            self._probe_active = True
            self._calls += 1
            return (self._generation, True)

    def _release(self, ticket: _Ticket) -> None:
        """Neither success nor failure (cancelled): free the probe slot if we held it."""
        with self._lock:
            self._cancellations += 1
            if ticket[1] and ticket[0] == self._generation:
                self._probe_active = False

    def _record_success(self, ticket: _Ticket, *, excluded: bool = False) -> None:
        with self._lock:
            if excluded:
                self._excluded += 1
            else:
                self._successes += 1
            if ticket[0] == self._generation:
                self._storage.reset_counter()
                if ticket[1]:
                    self._cb.close()
            for listener in self._listeners:
                listener.success(self._cb)

    def _record_error(self, ticket: _Ticket, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
            self._release(ticket)
            return
        if not self._cb.is_system_error(exc):
            self._record_success(ticket, excluded=True)
            return
        with self._lock:
            self._failures_total += 1
            current = ticket[0] == self._generation
            if current:
                self._storage.increment_counter()
            for listener in self._listeners:
                listener.failure(self._cb, exc)
            if current and (ticket[1] or self._storage.counter >= self._cb.fail_max):
                self._cb.open()


class BreakerRegistry:
    """Named :class:`AsyncBreaker` instances: one per name.

    ``get(name, ...)`` creates the breaker on first use and returns the same
    instance afterwards; settings given for an existing name must match the
    breaker's (``ValueError`` otherwise). Settings left as ``None`` are not
    checked (and take the defaults on creation).

    Example::

        >>> reg = BreakerRegistry()
        >>> a = reg.get("db", fail_max=3)
        >>> reg.get("db") is a, reg.get("db", fail_max=3) is a
        (True, True)
        >>> reg.get("db", fail_max=4)
        Traceback (most recent call last):
        ...
        ValueError: breaker 'db' already exists with different settings: fail_max=3 (asked for 4)
        >>> reg.stats()["db"]["state"]
        'closed'
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        """``clock`` is the default clock for breakers created without one."""
        self._clock = clock
        self._breakers: dict[str, AsyncBreaker] = {}
        self._lock = threading.Lock()

    def get(
        self,
        name: str,
        *,
        fail_max: int | None = None,
        reset_timeout_s: float | None = None,
        exclude: Iterable[Exclusion] | None = None,
        listeners: Iterable[pybreaker.CircuitBreakerListener] | None = None,
        clock: Clock | None = None,
    ) -> AsyncBreaker:
        """The breaker called ``name``, created with these settings if it does not exist."""
        wanted: dict[str, object] = {}
        if fail_max is not None:
            wanted["fail_max"] = fail_max
        if reset_timeout_s is not None:
            wanted["reset_timeout_s"] = float(reset_timeout_s)
        if exclude is not None:
            wanted["exclude"] = tuple(exclude)
        if listeners is not None:
            wanted["listeners"] = tuple(listeners)
        if clock is not None:
            wanted["clock"] = clock
        with self._lock:
            existing = self._breakers.get(name)
            if existing is not None:
                conflicts = [
                    f"{key}={getattr(existing, key)!r} (asked for {value!r})"
                    for key, value in wanted.items()
                    if getattr(existing, key) != value
                ]
                if conflicts:
                    raise ValueError(
                        f"breaker {name!r} already exists with different settings: {', '.join(conflicts)}"
                    )
                return existing
            breaker = AsyncBreaker(
                name,
                fail_max=fail_max if fail_max is not None else 5,
                reset_timeout_s=reset_timeout_s if reset_timeout_s is not None else 30.0,
                exclude=cast(tuple[Exclusion, ...], wanted.get("exclude", ())),
                listeners=cast(tuple[pybreaker.CircuitBreakerListener, ...], wanted.get("listeners", ())),
                clock=clock if clock is not None else self._clock,
            )
            self._breakers[name] = breaker
            return breaker

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def stats(self) -> dict[str, BreakerStats]:
        """``{name: breaker.stats()}`` for every breaker, in creation order."""
        with self._lock:
            breakers = list(self._breakers.values())
        return {b.name: b.stats() for b in breakers}
