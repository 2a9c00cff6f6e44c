"""Tracebacks of tasks: ``Future.traceback()`` for tasks run by threads or by
worker processes.

In: a task's exception.  A thread's task brings its real traceback; a worker
process's brings the traceback's *text* (``__cause__``, a
:class:`shmdask.scheduler.interfaces.RemoteTraceback`), since frames cannot cross
processes.  Out: a traceback object starting at the task's own code, so
``traceback.format_tb`` / ``print_tb`` show the task's files, lines and
functions (and the source lines, read from the same files on this machine).

Why rebuilt rather than returned as text: dask returns a traceback object and
user code passes it to the ``traceback`` module.  Each frame is recreated by
compiling a ``raise`` placed at the same file, line and function name, which
gives genuine frames without importing the task's module.
"""

from __future__ import annotations

import os
import re
import types

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep  # shmdask's own files
_FRAME = re.compile(r'^  File "(?P<file>.+)", line (?P<line>\d+), in (?P<name>.+)$')


def traceback_of(exc: BaseException | None) -> types.TracebackType | None:
    """A traceback object for a task's exception, starting at the task's own code.

    A task run by a thread has a real traceback; one run in a worker process
    comes back with the traceback's text (as ``__cause__``, see
    :class:`shmdask.scheduler.interfaces.RemoteTraceback`), from which the frames
    are rebuilt, so ``traceback.format_tb`` shows the task's files and lines.
    """
    if exc is None:
        return None
    text = getattr(exc.__cause__, "text", None)
    if isinstance(text, str):
        frames = [(m["file"], int(m["line"]), m["name"])
                  for m in map(_FRAME.match, text.splitlines()) if m]
        rebuilt = _rebuild_traceback(frames)
        if rebuilt is not None:
            return rebuilt
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and _is_ours(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def _is_ours(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR)


def _rebuild_traceback(frames: list[tuple[str, int, str]]) -> types.TracebackType | None:
    frames = [f for f in frames if not _is_ours(f[0])] or frames
    links = []
    for filename, lineno, name in frames:
        # A code object that raises at the same file, line and function name
        # gives a genuine frame for that place.
        code = compile("\n" * (lineno - 1) + "raise _marker", filename, "exec")
        if name.isidentifier():
            code = code.replace(co_name=name)
        try:
            exec(code, {"_marker": _Marker(), "__name__": name})
        except _Marker as marker:
            tb = marker.__traceback__.tb_next  # the frame of ``code``
            if tb is not None:
                links.append(tb)
    head = None
    for tb in reversed(links):
        head = types.TracebackType(head, tb.tb_frame, tb.tb_lasti, tb.tb_lineno)
    return head


class _Marker(Exception):
    pass
