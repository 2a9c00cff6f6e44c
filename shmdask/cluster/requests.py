"""Request and answer over a one-way message stream (a worker's pipe or socket).

Both ends of a worker connection send each other messages that need an
answer: the cluster asks a worker to run a function (``client.run``), a task
asks the cluster where the scheduler listens (``get_client``).  The asking
thread takes a numbered slot, sends its request with the number, and waits;
the connection's reader thread fills the slot when the answer with that
number arrives.  Answers to requests nobody waits for any more are dropped.

Also here, shared by the pipe and TCP transports: how a worker's answer to a
function call is read (:func:`function_result`; the call itself is pickled by
:func:`shmdask.cluster.protocol.dumps_call`), and what the cluster answers a
task's question (:func:`answer_ask`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from shmdask.cluster.protocol import load_exception, loads_message


class Requests:
    """Numbered slots for answers; thread-safe."""

    def __init__(self) -> None:
        self._slots: dict[int, list] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def ask(self, send: Callable[[int], Any], timeout: float | None, what: str) -> Any:
        """``send(request_id)``, then wait for :meth:`answer` of that id; returns
        its value.  TimeoutError after ``timeout`` seconds."""
        req = next(self._ids)
        slot = [threading.Event(), None]
        with self._lock:
            self._slots[req] = slot
        try:
            send(req)
            if not slot[0].wait(timeout):
                raise TimeoutError(f"no answer to {what} within {timeout} s")
        finally:
            with self._lock:
                self._slots.pop(req, None)
        return slot[1]

    def answer(self, req: int, value: Any) -> None:
        with self._lock:
            slot = self._slots.get(req)
        if slot is not None:
            slot[1] = value
            slot[0].set()

    def cancel_all(self, value: Any) -> None:
        """The connection is gone: every waiting asker gets ``value``."""
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            slot[1] = value
            slot[0].set()


def function_result(ok: bool, body: list) -> tuple[bool, Any]:
    """A worker's "function-result" message -> ``(ok, value or exception)``."""
    try:
        (value,) = loads_message(body)
    except Exception as exc:  # e.g. a class the client cannot import: the caller's error
        return False, RuntimeError(f"the worker's answer could not be read here: {exc!r}")
    return (True, value) if ok else (False, load_exception(value))


def answer_ask(on_ask: Any, header: tuple) -> tuple[bool, Any]:
    """What to answer a task's ``("ask", req, what, args)``: ``(ok, value or reason)``."""
    if on_ask is None:
        return False, "this scheduler answers no questions from workers"
    try:
        return True, on_ask(header[2], header[3])
    except Exception as exc:  # the reason goes back to the asking task
        return False, f"{type(exc).__name__}: {exc}"


__all__ = ["Requests", "function_result", "answer_ask"]
