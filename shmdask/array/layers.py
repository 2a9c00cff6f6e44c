"""Layers: how an Array's task graph is kept until someone asks for it.

An Array does not hold a task dict. It holds a mapping ``layer name -> Layer``
(one layer per operation) and materialises a plain spec graph only when a
scheduler, ``.dask`` or ``len()`` needs one.  Two kinds of layer exist:

``MaterializedLayer``
    an ordinary ``key -> computation`` dict (slicing, rechunking, reduction
    trees, persisted data) plus the names of the layers it reads from.

``BlockwiseLayer``
    a recipe "output block ``(i, j, ...)`` is ``func(arg0, arg1, ...)``" where
    each argument is a block of another layer chosen by index symbols (as in
    ``numpy.einsum``), a literal, a per-block literal (e.g. the block's shape or
    seed) or a fixed key.  Elementwise maths, per-chunk reduction steps, random
    generation, transposes and ``map_blocks`` are all of this kind.

Why lazy: when the graph is materialised, a blockwise layer whose blocks are
each read by exactly one block of exactly one other blockwise layer is not
given keys of its own; its task expression is nested inside the reader's
task instead.  So ``(arcsin(random x) + arccos(random y)).sum(axis=...)``
becomes one task per chunk (both random draws, both ufuncs, the add and the
chunk sum) plus the reduction tree, decided per layer in O(layers) and
written out per block with no per-block hashing.  A layer read twice (e.g. x
in ``x + x.T``) keeps its own keys, so nothing is computed twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from itertools import product
from typing import Any

import numpy as np

# Argument specs of a BlockwiseLayer (plain tuples, cheap to build):
#   ("array", layer_name, index, numblocks)  index: tuple of symbols (str) or
#                                             fixed block numbers (int)
#   ("literal", computation)                 the same for every block (build it with
#                                             ``quote(value)`` for arbitrary values)
#   ("perblock", fn)                         fn(out_index) -> literal, evaluated
#                                             while materialising (never pickled)
#   ("key", key)                             a fixed key of another layer


class Layer:
    name: str

    def references(self) -> list[tuple[str, bool]]:
        """(layer name read, whether each of its blocks is read at most once)."""
        raise NotImplementedError

    def materialize(self, inlined: set, layers: dict) -> dict:
        raise NotImplementedError


class MaterializedLayer(Layer):
    __slots__ = ("name", "graph", "deps")

    def __init__(self, name: str, graph: dict, deps: tuple | list | set = ()):
        self.name = name
        self.graph = graph
        self.deps = tuple(deps)

    def references(self) -> list[tuple[str, bool]]:
        return [(d, False) for d in self.deps]

    def materialize(self, inlined: set, layers: dict) -> dict:
        return self.graph

    def __len__(self) -> int:
        return len(self.graph)


class BlockwiseLayer(Layer):
    """``out[idx] = func(*args chosen by idx)`` for every block index ``idx``."""

    __slots__ = ("name", "func", "out_ind", "numblocks", "args", "_plan", "fresh", "inplace",
                 "out_dtype")

    def __init__(self, name: str, func: Callable, out_ind: tuple[str, ...],
                 numblocks: dict[str, int], args: list[tuple], fresh: bool = False,
                 inplace: Any = None, out_dtype: Any = None):
        self.name = name
        self.func = func
        self.out_ind = tuple(out_ind)
        self.numblocks = dict(numblocks)
        self.args = list(args)
        self._plan = None
        # ``fresh``: each block is a newly allocated array nobody else holds, so
        # when this layer is nested into its reader's task the reader may
        # overwrite it.  ``inplace``: a one-output numpy ufunc equivalent to
        # ``func`` that can write into such an argument (``out=``) instead of
        # allocating; ``out_dtype`` is the dtype it must have for that.
        self.fresh = fresh
        self.inplace = inplace
        self.out_dtype = out_dtype

    @property
    def out_numblocks(self) -> tuple[int, ...]:
        return tuple(self.numblocks[s] for s in self.out_ind)

    def __len__(self) -> int:
        n = 1
        for b in self.out_numblocks:
            n *= b
        return n

    def _injective(self, ind: tuple, nb: tuple) -> bool:
        """Does each block of this argument feed at most one output block?"""
        syms = [c for c in ind if type(c) is str]
        if len(set(syms)) != len(syms) or any(s not in self.numblocks for s in syms):
            return False
        if any(s not in self.out_ind for s in syms):  # contraction: one block, many uses
            return False
        for s in self.out_ind:
            if self.numblocks[s] > 1:
                if s not in ind or nb[ind.index(s)] != self.numblocks[s]:
                    return False
        return True

    def references(self) -> list[tuple[str, bool]]:
        out = []
        for spec in self.args:
            if spec[0] == "array":
                out.append((spec[1], self._injective(spec[2], spec[3])))
            elif spec[0] == "key":
                key = spec[1]
                out.append((key[0] if type(key) is tuple else key, False))
        return out

    def _make_plan(self) -> list:
        """Per argument, a fast recipe from the output index to the task argument."""
        pos = {s: i for i, s in enumerate(self.out_ind)}
        plan = []
        for spec in self.args:
            kind = spec[0]
            if kind == "array":
                _, name, ind, nb = spec
                # contracted symbols are enumerated in sorted order, the same for every
                # argument, so lists of blocks from different arguments line up
                contracted = sorted({c for c in ind if type(c) is str and c not in pos})
                getters = []
                for d, c in enumerate(ind):
                    if type(c) is int:
                        getters.append(("const", c))
                    elif c in pos:
                        if nb[d] == 1:
                            getters.append(("const", 0))
                        else:
                            getters.append(("out", pos[c]))
                    else:
                        getters.append(("sum", contracted.index(c)))
                ranges = [range(nb[ind.index(c)]) for c in contracted]
                plan.append(("array", name, tuple(getters), ranges))
            else:
                plan.append(spec)
        return plan

    def block_task(self, idx: tuple, inlined: set, layers: dict) -> tuple:
        plan = self._plan
        if plan is None:
            plan = self._plan = self._make_plan()
        args: list[Any] = [self.func]
        private = None  # position of the first argument this task may overwrite
        for spec in plan:
            kind = spec[0]
            if kind == "array":
                _, name, getters, ranges = spec
                if (private is None and not ranges and name in inlined
                        and self.inplace is not None and layers[name].fresh):
                    private = len(args) - 1
                if ranges:
                    items = []
                    for combo in product(*ranges):
                        in_idx = tuple(idx[v] if g == "out" else (v if g == "const" else combo[v])
                                       for g, v in getters)
                        items.append(_ref(name, in_idx, inlined, layers))
                    args.append(items)
                else:
                    in_idx = tuple(idx[v] if g == "out" else v for g, v in getters)
                    args.append(_ref(name, in_idx, inlined, layers))
            elif kind == "literal":  # quoted by whoever built the spec
                args.append(spec[1])
            elif kind == "perblock":
                args.append(_quote(spec[1](idx)))
            elif kind == "key":
                args.append(spec[1])
            else:  # pragma: no cover - internal misuse
                raise ValueError(f"unknown blockwise argument kind {kind!r}")
        if private is not None:
            args[0] = partial(ufunc_into, self.inplace, private, self.out_dtype)
        return tuple(args)

    def materialize(self, inlined: set, layers: dict) -> dict:
        name = self.name
        return {(name,) + idx: self.block_task(idx, inlined, layers)
                for idx in product(*(range(n) for n in self.out_numblocks))}


def ufunc_into(ufunc: Any, k: int, dtype: Any, *args: Any) -> Any:
    """``ufunc(*args)``, written into ``args[k]`` when that is possible.

    Only used where ``args[k]`` was computed inside this very task and is held
    by nothing else (see ``BlockwiseLayer.fresh``): reusing its buffer saves an
    allocation (and the page faults of a fresh one) per operation.  The result
    must have exactly the buffer's dtype and shape, else a new array is made.
    """
    a = args[k]
    if (type(a) is np.ndarray and a.dtype == dtype and a.flags.writeable
            and a.shape == np.broadcast_shapes(*[np.shape(v) for v in args])):
        return ufunc(*args, out=a)
    return ufunc(*args)


def _ref(name: str, in_idx: tuple, inlined: set, layers: dict) -> Any:
    if name in inlined:
        return layers[name].block_task(in_idx, inlined, layers)
    return (name,) + in_idx


class _LiteralBox:
    """Carries a value through the graph without it being read as a task or key."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __reduce__(self):
        return (_LiteralBox, (self.value,))


def _unbox(box: _LiteralBox) -> Any:
    return box.value


def quote(value: Any) -> Any:
    """A computation that evaluates to ``value``: wraps strs and tuples that look
    like tasks or keys; everything else is already a literal of the spec."""
    typ = type(value)
    if typ is str or (typ is tuple and value and (callable(value[0]) or type(value[0]) is str)):
        return (_unbox, _LiteralBox(value))
    return value


_quote = quote


MAX_FUSE_DEPTH = 8  # x core fuse_linear chains of up to 32 tasks: < 300 nested calls


def fused_inlined(layers: dict, outputs: set) -> set:
    """Names of blockwise layers to nest into their single blockwise reader.

    Chains are cut every ``MAX_FUSE_DEPTH`` layers (that layer keeps its own
    keys), so a loop of ``x = x + 1`` a thousand times long still evaluates
    without deep recursion.  ``layers`` is in insertion order, which is
    topological (every operation adds its layer after its inputs').
    """
    uses: Counter = Counter()
    once: dict[str, bool] = {}
    refs: dict[str, list] = {}
    for name, layer in layers.items():
        refs[name] = layer.references()
        for dep, injective in refs[name]:
            uses[dep] += 1
            once[dep] = injective
    inlined = {name for name, layer in layers.items()
               if isinstance(layer, BlockwiseLayer) and name not in outputs
               and uses[name] == 1 and once.get(name, False)}
    depth: dict[str, int] = {}
    for name in layers:
        d = 1 + max((depth.get(dep, 0) for dep, _ in refs[name] if dep in inlined), default=0)
        if name in inlined and d >= MAX_FUSE_DEPTH:
            inlined.discard(name)
            d = 0
        depth[name] = d
    return inlined


def materialize(layers: dict, outputs: set) -> dict:
    """The plain task graph of all ``layers`` with blockwise fusion applied."""
    inlined = fused_inlined(layers, outputs)
    dsk: dict = {}
    for name, layer in layers.items():
        if name not in inlined:
            dsk.update(layer.materialize(inlined, layers))
    return dsk


class LayeredGraph(Mapping):
    """The graph :func:`materialize` would write, written out as it is read.

    ``graph[key]`` builds one block's task when asked (with the same blockwise
    fusion), so a scheduler that walks a huge graph from its outputs
    (:func:`shmdask.graph.order_pieces`) starts running its first tasks before
    the millionth block's task exists, and no whole dict is ever held.  Only
    the materialized layers' entries (reduction trees, slicing, data; small
    next to the blockwise layers) are merged up front.  ``len()`` is counted
    per layer, without writing anything out.
    """

    __slots__ = ("layers", "inlined", "_blockwise", "_entries", "_len")

    def __init__(self, layers: dict, inlined: set):
        self.layers = layers
        self.inlined = inlined
        self._blockwise: dict[str, tuple] = {}  # name -> (layer, numblocks of its output)
        self._entries: dict = {}  # the materialized layers, merged in layer order
        for name, layer in layers.items():
            if name in inlined:
                continue
            if isinstance(layer, BlockwiseLayer):
                self._blockwise[name] = (layer, layer.out_numblocks)
            else:
                self._entries.update(layer.materialize(inlined, layers))
        self._len = len(self._entries) + sum(
            len(layer) for layer, _ in self._blockwise.values())

    def _block(self, key: Any) -> tuple | None:
        """(layer, its output numblocks) when ``key`` names one of its blocks.

        Called for nearly every key of a huge graph, several times (each
        reference to it is checked): a plain loop, no slices or zips."""
        if type(key) is not tuple or not key:
            return None
        found = self._blockwise.get(key[0])
        if found is None or len(key) != len(found[1]) + 1:
            return None
        d = 1
        for n in found[1]:
            i = key[d]
            if type(i) is not int or not 0 <= i < n:
                return None
            d += 1
        return found

    # Blocks are looked up first: they are nearly every key of a huge graph, and
    # a miss in ``_entries`` first would cost a hash of the key for nothing.
    def __getitem__(self, key: Any) -> Any:
        try:
            found = self._block(key)
            if found is None:
                return self._entries[key]
        except TypeError:  # unhashable: not a key
            raise KeyError(key) from None
        return found[0].block_task(key[1:], self.inlined, self.layers)

    def __contains__(self, key: Any) -> bool:
        try:
            return self._block(key) is not None or key in self._entries
        except TypeError:  # an unhashable value asked about: not a key
            return False

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator:
        entries = self._entries
        yield from entries
        for name, (_, numblocks) in self._blockwise.items():
            for idx in product(*(range(n) for n in numblocks)):
                key = (name,) + idx
                if key not in entries:
                    yield key


def lazy_graph(layers: dict, outputs: set, min_tasks: int) -> LayeredGraph | None:
    """The graph of ``layers`` as a :class:`LayeredGraph` when it has at least
    ``min_tasks`` tasks, else None; counted from the layers' sizes alone."""
    inlined = fused_inlined(layers, outputs)
    if sum(len(layer) for name, layer in layers.items() if name not in inlined) < min_tasks:
        return None
    return LayeredGraph(layers, inlined)
