"""Scheduler-side calls beyond tasks: one table of named verbs a Client may call.

In: ``(name, kwargs)`` from ``Connection.call`` — directly from a
:class:`~shmdask.connection.LocalConnection` (the client owns the engine), or
as a ``("call", ...)`` request that a TCP :class:`ClientSession` runs on a
thread of its own (calls may block: a Lock, a Queue, functions on workers).
Out: the call's value, or its exception, to the caller.

The calls::

    run            fn(*args, **kwargs) on every worker (or some) -> {worker: value}
    run_on_scheduler  fn(*args, **kwargs) here, in the scheduler's process
    upload_file    a .py/.zip/.egg saved and imported on every worker, and on later ones
    retire_workers graceful stop of workers (LocalCluster.retire_workers)
    worker_logs    each worker's kept log lines
    shutdown       close the cluster (after answering)
    coordination   Lock / Semaphore / Event / Variable / Queue / Pub-Sub operations

Workers are reached through their engine handles' ``call_function`` (pipe or
TCP); the threads backend has no process, so functions run here.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CALLS: dict[str, Callable[..., Any]] = {}


def _call(name: str) -> Callable:
    def register(fn: Callable) -> Callable:
        CALLS[name] = fn
        return fn

    return register


def handle_call(cluster: Any, name: str, kwargs: dict) -> Any:
    """Run the call ``name`` for ``cluster``; unknown names are an error."""
    fn = CALLS.get(name)
    if fn is None:
        raise ValueError(f"unknown scheduler call {name!r}; known: {sorted(CALLS)}")
    if not isinstance(kwargs, dict):
        raise TypeError(f"scheduler call {name!r} needs keyword arguments")
    return fn(cluster, **kwargs)


def bound_calls(cluster: Any) -> Callable[[str, dict], Any]:
    """``handle_call`` for ``cluster``, holding it weakly (a listener must not
    keep its cluster alive)."""
    ref = weakref.ref(cluster)

    def calls(name: str, kwargs: dict) -> Any:
        target = ref()
        if target is None:
            raise RuntimeError("the cluster is closed")
        return handle_call(target, name, kwargs)

    return calls


def worker_handles(cluster: Any, workers: list | None = None) -> dict[str, Any]:
    """The engine's workers (all kinds), or the named ones (unknown names: KeyError)."""
    handles = cluster.engine.call(lambda e: dict(e.workers))
    if workers is None:
        return handles
    if isinstance(workers, str):
        workers = [workers]
    unknown = [w for w in workers if w not in handles]
    if unknown:
        raise KeyError(f"no worker(s) {unknown} in this cluster; workers: {sorted(handles)}")
    return {w: handles[w] for w in workers}


def call_on_workers(cluster: Any, function: Callable, args: tuple = (),
                    kwargs: dict | None = None, workers: list | None = None,
                    timeout: float | None = None) -> dict[str, tuple[bool, Any]]:
    """``function`` on each worker at once -> ``{worker: (ok, value or exception)}``."""
    handles = worker_handles(cluster, workers)
    kwargs = kwargs or {}

    def one(handle: Any) -> tuple[bool, Any]:
        call = getattr(handle, "call_function", None)
        if call is not None:
            return call(function, args, kwargs, timeout)
        try:  # a thread worker: this process is the worker
            return True, function(*args, **kwargs)
        except Exception as exc:
            return False, exc

    if not handles:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(handles))) as pool:
        answers = dict(zip(handles, pool.map(one, handles.values()), strict=True))
    return answers


@_call("run")
def run(cluster: Any, function: Callable, args: tuple = (), kwargs: dict | None = None,
        workers: list | None = None, on_error: str = "raise",
        timeout: float | None = None) -> dict[str, Any]:
    """``client.run``: ``{worker: value}``; ``on_error`` "raise" (the first
    exception), "return" (exceptions as values) or "ignore" (left out)."""
    if on_error not in ("raise", "return", "ignore"):
        raise ValueError(f"on_error must be 'raise', 'return' or 'ignore', not {on_error!r}")
    out = {}
    for wid, (ok, value) in call_on_workers(cluster, function, args, kwargs, workers,
                                            timeout).items():
        if ok or on_error == "return":
            out[wid] = value
        elif on_error == "raise":
            raise value
    return out


@_call("run_on_scheduler")
def run_on_scheduler(cluster: Any, function: Callable, args: tuple = (),
                     kwargs: dict | None = None) -> Any:
    """``client.run_on_scheduler``: call ``function`` in the scheduler's process; a
    ``dask_scheduler`` parameter is given ``cluster.scheduler`` (the scheduler view)."""
    from shmdask.cluster.worker_calls import call_function

    scheduler = getattr(cluster, "scheduler", cluster)
    ok, value = call_function(scheduler, lambda: (function, args, kwargs or {}),
                              context_name="dask_scheduler")
    if not ok:
        raise value
    return value


@_call("upload_file")
def upload_file(cluster: Any, filename: str, data: bytes) -> dict[str, str]:
    """Save and import ``filename`` on every worker (and on workers started later)."""
    from shmdask.cluster.worker_calls import UPLOADABLE, install_upload

    if not filename.endswith(UPLOADABLE):
        raise ValueError(f"cannot upload {filename!r}: only {', '.join(UPLOADABLE)} files")
    runtime = getattr(cluster, "_runtime", None)
    if runtime is not None:
        runtime.uploads[filename] = data
    return run(cluster, install_upload, (filename, data))


@_call("retire_workers")
def retire_workers(cluster: Any, workers: list | None = None, n: int | None = None
                   ) -> dict[str, dict]:
    retire = getattr(cluster, "retire_workers", None)
    if retire is None:
        raise TypeError(f"{type(cluster).__name__} cannot retire workers")
    return retire(workers=workers, n=n)


@_call("worker_logs")
def worker_logs(cluster: Any, workers: list | None = None, n: int | None = None
                ) -> dict[str, list]:
    from shmdask.cluster.worker_calls import worker_logs as logs_here

    return run(cluster, logs_here, (n,), workers=workers, on_error="ignore", timeout=30)


@_call("scheduler_logs")
def scheduler_logs(cluster: Any, n: int | None = None) -> list:
    from shmdask.cluster.worker_calls import keep_logs

    lines = list(keep_logs().lines)
    return lines[-n:] if n else lines


@_call("shutdown")
def shutdown(cluster: Any) -> None:
    # Answer first: closing also closes the connection this call came on.
    timer = threading.Timer(0.05, cluster.close)
    timer.daemon = True
    timer.start()


@_call("coordination")
def coordination(cluster: Any, kind: str, name: str, op: str, args: tuple = (),
                 kwargs: dict | None = None) -> Any:
    from shmdask.coordination import service_for

    return service_for(cluster.engine).handle(kind, name, op, args, kwargs or {})


__all__ = ["CALLS", "handle_call", "bound_calls", "call_on_workers", "worker_handles"]
