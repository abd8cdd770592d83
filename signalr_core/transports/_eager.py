"""Run a coroutine eagerly: step it in the caller's task until it first has to wait, and finish
it later in another task, as asyncio's own task would have run it.

A transport's ``send`` (on asyncio) hands the bytes to the socket at once and waits only when
the client reads too slowly. :func:`start` runs it in the caller's task up to that point; what
is left, if anything, is a :class:`Suspended` that another task finishes
(:meth:`Suspended.finish`) or drops (:meth:`Suspended.cancel`), also while another task is
finishing it (that one then gets ``ConnectionAbortedError``).

What a coroutine may rely on inside a task, it still gets:

* every step runs in one :class:`contextvars.Context`, the one given to :func:`start` (so a
  wrapper that sets a context variable before an ``await`` and resets it after works);
* what it waits on is a future, taken as the task takes it (``_asyncio_future_blocking``
  cleared), or ``None`` (a bare ``yield``: one turn of the loop);
* cancellation of the finishing task cancels the future it waits on and is thrown in at that
  ``await``; :meth:`Suspended.cancel` does the same at once (without waiting for anything
  further), so ``finally`` blocks and the hand-overs of asyncio's locks run.

What it cannot rely on: being in one task. An ``anyio`` cancel scope or an
``asyncio.timeout`` kept open across a suspension would be exited in another task than it was
entered in.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["Suspended", "start"]


def start(
    context: contextvars.Context, function: Callable[..., Awaitable[None]], *args: Any
) -> Suspended | None:
    """Call ``function(*args)`` and step the coroutine it returns in ``context`` until it ends
    (``None``) or has to wait (the :class:`Suspended` rest). What it raises propagates."""
    awaitable = context.run(function, *args)
    coroutine = awaitable if inspect.iscoroutine(awaitable) else _awaited(awaitable)
    done, waits_on = _step(context, coroutine, coroutine.send, None)
    return None if done else Suspended(context, coroutine, waits_on)


class Suspended:
    """The rest of a coroutine that :func:`start` stepped until it had to wait."""

    __slots__ = ("_context", "_coroutine", "_dropped", "_waits_on")

    def __init__(
        self,
        context: contextvars.Context,
        coroutine: Coroutine[Any, Any, None],
        waits_on: asyncio.Future[Any] | None,
    ) -> None:
        self._context = context
        self._coroutine = coroutine
        self._waits_on = waits_on
        self._dropped = False

    async def finish(self) -> None:
        """Run the rest in this task (once), as asyncio's task would have.

        Raises:
            ConnectionAbortedError: it was dropped (:meth:`cancel`), before or while this ran.
        """
        context, coroutine = self._context, self._coroutine
        while not self._dropped:
            waits_on = self._waits_on
            try:
                if waits_on is None:
                    await asyncio.sleep(0)
                else:
                    await waits_on
            except BaseException as exc:  # the future failed, or this task was cancelled
                if self._dropped:  # what failed it was cancel(), which ended the coroutine
                    break
                done, self._waits_on = _step(context, coroutine, coroutine.throw, exc)
            else:
                if self._dropped:
                    break
                done, self._waits_on = _step(context, coroutine, coroutine.send, None)
            if done:
                return
        raise ConnectionAbortedError("the write was dropped: its transport ended")

    def cancel(self) -> None:
        """Drop the rest at once: the future it waits on is cancelled and ``CancelledError``
        thrown in at that ``await``, as a task's cancellation does (``finally`` blocks and
        lock hand-overs run), without waiting for anything further; then it is closed if it
        goes on waiting."""
        if self._dropped:
            return
        self._dropped = True
        context, coroutine, waits_on = self._context, self._coroutine, self._waits_on
        if waits_on is not None:
            waits_on.cancel()
        try:
            _step(context, coroutine, coroutine.throw, asyncio.CancelledError())
        except (Exception, asyncio.CancelledError):
            return  # it ended (cancelled, or failing on the way out)
        with contextlib.suppress(RuntimeError):  # it ignored the GeneratorExit
            coroutine.close()


def _step(
    context: contextvars.Context,
    coroutine: Coroutine[Any, Any, None],
    method: Callable[[Any], Any],
    value: Any,
) -> tuple[bool, asyncio.Future[Any] | None]:
    """One step: whether the coroutine returned, else what it waits on next."""
    try:
        waits_on = context.run(method, value)
    except StopIteration:
        return True, None
    except BaseException:
        if getattr(coroutine, "cr_frame", None) is not None:
            coroutine.close()  # not resumed (the context could not be entered): not left behind
        raise
    if waits_on is None:
        return False, None
    if not asyncio.isfuture(waits_on):
        coroutine.close()
        raise RuntimeError(f"a coroutine run eagerly yielded {waits_on!r}, not a future")
    waits_on._asyncio_future_blocking = False  # as the task does
    return False, waits_on


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable
