"""A big graph handed to the engine in run-order pieces.

In: the ``(graph, dependencies, priorities)`` pieces of
:func:`shmdask.graph.order_pieces`, the wanted keys and their listener.  Out:
one :meth:`Engine.submit <shmdask.scheduler.engine.Engine.submit>` per piece,
so the first tasks run while the rest of the graph is still being walked.
Both the in-process backends (one piece per loop step) and a client's
connection (all pieces at once) drive the same submitter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from shmdask.scheduler.interfaces import Listener

if TYPE_CHECKING:
    from shmdask.scheduler.engine import Engine


class PieceSubmitter:
    """Adds a graph given in run-order pieces (:func:`shmdask.graph.order_pieces`)
    to an engine, one piece per :meth:`submit_next`.

    Each piece's keys are held (wanted without a listener) until the last
    piece is in, since a later piece may still need them; the wanted keys get
    ``listener`` in the piece that brings them.  Wanted keys no piece brought
    are submitted at the end, so the engine reports them unknown."""

    def __init__(self, engine: Engine, pieces: Iterable[tuple], wanted: Iterable,
                 listener: Listener | None):
        self.engine = engine
        self.pieces = iter(pieces)
        self.wanted = list(wanted)
        self.wanted_left = set(self.wanted)
        self.listener = listener
        self.held: list = []
        self.total = 0

    def submit_next(self) -> bool:
        """Submit the next piece; False (and the holds let go of) when none is left."""
        piece = next(self.pieces, None)
        engine = self.engine
        if piece is None:
            if self.held:
                engine.unwant(self.held)
                self.held = []
            if self.wanted_left:
                engine.submit({}, {}, list(self.wanted_left), None, self.listener)
                self.wanted_left = set()
            return False
        graph, dependencies, priorities = piece
        keys = list(graph)
        want = [k for k in keys if k in self.wanted_left]
        self.wanted_left.difference_update(want)
        engine.submit(graph, dependencies, want, priorities, self.listener, hold=keys)
        self.held.extend(keys)
        self.total += len(keys)
        return True

    def abort(self) -> None:
        """Let go of everything sent so far (the walk failed half-way, e.g. a cycle)."""
        sent = [k for k in self.wanted if k not in self.wanted_left]
        self.engine.unwant([*self.held, *sent])
        self.held = []
        self.wanted_left = set()
