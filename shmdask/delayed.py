"""``delayed``: lazy function calls that build a task graph.

A :class:`Delayed` is a graph (``.dask``) and one output key (``.key``).
Calling a delayed function, an operator, ``obj[i]``, ``obj.attr`` or
``obj.method(...)`` on Delayed values returns a new Delayed whose graph is
the union of its inputs' graphs plus one task.  Nothing runs until
``compute``.

Arguments are *unpacked* into the graph spec (:func:`unpack_collections`):
Delayed values become their keys, lists stay lists, tuples/dicts/sets become
small tasks that rebuild them, other collections (arrays) become a task that
assembles their result, and Futures become their key (their data is already
on the cluster).  So ``f([a, (b, {"k": c})])`` receives real values at every
depth, as in dask.  Every other argument is data: strings and containers
that hold no collection are wrapped as ``(Literal(value),)``, so a string
that happens to name a key, or a tuple that looks like a task, reaches the
function as it was passed.

Keys are ``<name>-<token>``: a random token by default (every call is a new
task), or ``tokenize`` of the function and arguments with ``pure=True`` (the
same call always has the same key, so it runs once).
"""

from __future__ import annotations

import operator
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from shmdask import base
from shmdask.base import Literal
from shmdask.graph import key_split
from shmdask.interop.shmdask_on_dask import DaskCollection
from shmdask.tokenize import tokenize, unique_token

__all__ = ["Delayed", "delayed", "unpack_collections"]


def _new_token(pure: bool, *parts: Any) -> str:
    return tokenize(*parts) if pure else unique_token()


def _build(kind: type, items: list) -> Any:
    return kind(items)


def _build_dict(pairs: list) -> dict:
    return dict(pairs)


def _call_with_kwargs(func: Callable, args: list, kwargs: dict) -> Any:
    return func(*args, **kwargs)


def _call_method(obj: Any, name: str, args: list, kwargs: dict) -> Any:
    return getattr(obj, name)(*args, **kwargs)


#: Literal values of these types could be read as keys or tasks by the graph
#: spec; they are quoted as ``(Literal(value),)`` when they hold no collection.
_QUOTED_TYPES = (str, tuple, list, set, frozenset)


def _quote(x: Any) -> Any:
    return (Literal(x),) if type(x) in _QUOTED_TYPES else x


_PLAIN_TYPES = frozenset({int, float, complex, bool, bytes, type(None)})


def unpack_collections(expr: Any) -> tuple[Any, list]:
    """``expr`` as a graph computation, and the collections it refers to.

    Plain data comes back quoted where the spec could misread it (see the
    module docstring), so the computation always evaluates to ``expr``.
    """
    typ = type(expr)
    if typ in _PLAIN_TYPES:  # most arguments: numbers, None (no walk needed)
        return expr, []
    if typ is Delayed:
        return expr._key, [expr]
    collections: list = []
    functions: list = []

    def unpack(x: Any) -> Any:
        if isinstance(x, Delayed):
            collections.append(x)
            return x.key
        if isinstance(x, DelayedFunction):  # a task receives the function itself
            functions.append(x)
            return x.func
        if base.is_future(x):
            collections.append(x)
            return x.key
        if base.is_collection(x):
            collections.append(x)
            finalize, extra = x.__shmdask_postcompute__()
            return (finalize, x.__shmdask_keys__(), *extra)
        typ = type(x)
        if typ is list:
            return [unpack(i) for i in x]
        if typ is tuple:
            return (_build, tuple, [unpack(i) for i in x])
        if typ in (set, frozenset):
            return (_build, typ, [unpack(i) for i in x])
        if typ is dict:
            return (_build_dict, [[unpack(k), unpack(v)] for k, v in x.items()])
        if isinstance(x, slice):
            return (slice, unpack(x.start), unpack(x.stop), unpack(x.step))
        if typ is str:
            return (Literal(x),)
        return x

    task = unpack(expr)
    if not collections and not functions:  # keep plain values plain: no rebuilding
        return _quote(expr), []
    return task, collections


def _split_inputs(collections: list) -> tuple[dict | None, tuple]:
    """A new task's own extra graph entries (Futures: their data is on the
    cluster already), or None, and the collections whose graphs it extends
    (merged lazily)."""
    own: dict | None = None
    parents = []
    for c in collections:
        if base.is_future(c):
            if own is None:
                own = {}
            own[c.key] = c
        else:
            parents.append(c)
    return own, tuple(parents)


_NO_TASK = object()  # Delayed._task when the node's entries are all in ``_dask``
_SIZE_CAP = 1 << 62  # Delayed._size stops growing here (x = x + x, a thousand times)


def _collections_of(root: Delayed) -> Iterator[Any]:
    """``root`` and every collection its graph is made of (Delayed nodes and
    other collections, e.g. Arrays), each once, depth-first from ``root``."""
    seen: set = set()
    stack: list = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, Delayed):
            stack.extend(node._parents)


def _materialize(root: Delayed) -> dict:
    """The whole graph of ``root``: its own entries and its parents', each
    collection visited once (so a tree of n calls costs O(n), not O(n log n)
    as merging every input's whole graph at every call would)."""
    dsk: dict = {}
    for node in reversed(list(_collections_of(root))):  # own entries win over inputs'
        if not isinstance(node, Delayed):
            dsk.update(node.__shmdask_graph__())
            continue
        if node._dask:
            dsk.update(node._dask)
        if node._task is not _NO_TASK:
            dsk[node._key] = node._task
    return dsk


def _count_at_least(root: Delayed, n: int) -> bool:
    """Whether the graph of ``root`` has ``n`` tasks or more; walks until it
    has counted ``n``, so asking about a huge graph costs a bounded walk."""
    count = 0
    graphs: set = set()  # ids of own-entry dicts counted (to_delayed's blocks share one)
    for node in _collections_of(root):
        if isinstance(node, Delayed):
            count += node._task is not _NO_TASK
            own = node._dask
            if own and id(own) not in graphs:
                graphs.add(id(own))
                count += len(own)
        else:
            count += len(node.__shmdask_graph__())
        if count >= n:
            return True
    return False


class DelayedGraph(Mapping):
    """The graph of a Delayed, merged as it is read from the output key.

    ``graph[key]`` opens the node that holds ``key``: its task and own entries
    join the graph, and its inputs become known by key, unopened.  A walk from
    the output (:func:`shmdask.graph.order_pieces`) reads a key only after a
    task that refers to it, so the first tasks of a million-call graph are
    given out before the rest is merged, and no whole dict is built first.
    Entries met first win, as a task's own entries win over its inputs' in
    the merged ``Delayed.dask``.  A key asked about before any walk met it
    (a graph that refers to a key none of its inputs declared) has the rest
    merged at once, as do ``len()`` and iteration.
    """

    __slots__ = ("_tasks", "_nodes", "_merged")

    def __init__(self, root: Delayed):
        self._tasks: dict = {}  # key -> computation, of the nodes opened so far
        self._nodes: dict = {root._key: root}  # key -> a Delayed not opened yet
        self._merged = False

    def _open(self, node: Delayed) -> Any:
        tasks, nodes = self._tasks, self._nodes
        key = node._key
        own = node._dask
        if own:
            for k, v in own.items():
                if k not in tasks:
                    tasks[k] = v
        task = tasks[key] = own[key] if node._task is _NO_TASK else node._task
        for parent in node._parents:
            if isinstance(parent, Delayed):
                k = parent._key
                if k not in tasks and k not in nodes:
                    nodes[k] = parent
            else:  # another collection (an Array): its graph as it is
                for k, v in parent.__shmdask_graph__().items():
                    if k not in tasks:
                        tasks[k] = v
        return task

    def _merge_rest(self) -> None:
        nodes = self._nodes
        while nodes:
            # the last one met first (as _collections_of's stack): taking the
            # first would rescan the slots its pops emptied, O(n^2) on a wide graph
            key, node = nodes.popitem()
            if key not in self._tasks:
                self._open(node)
        self._merged = True

    def __getitem__(self, key: Any) -> Any:
        tasks = self._tasks
        if key in tasks:
            return tasks[key]
        node = self._nodes.pop(key, None)
        if node is not None:
            return self._open(node)
        if not self._merged:
            self._merge_rest()
            return tasks[key]
        raise KeyError(key)

    def __contains__(self, key: Any) -> bool:
        try:
            if key in self._tasks or key in self._nodes:
                return True
        except TypeError:  # an unhashable value: not a key
            return False
        if self._merged:
            return False
        self._merge_rest()
        return key in self._tasks

    def __len__(self) -> int:
        self._merge_rest()
        return len(self._tasks)

    def __iter__(self) -> Iterator:
        self._merge_rest()
        return iter(self._tasks)


def _finalize_first(results: list) -> Any:
    return results[0]


def _rebuild_delayed(dsk: dict, key: Any, length: int | None) -> Delayed:
    return Delayed(key, dsk, length)


class Delayed(DaskCollection):
    """A lazy value: ``.dask`` (the graph) and ``.key`` (its output); a dask
    collection too (``DaskCollection``).

    A Delayed holds its own graph entries (``_dask``, and ``_task`` for its
    key) and its input collections (``parents``); the whole graph is merged
    when first asked for, then kept.  A call costs one small object, not a
    copy of its inputs' graphs."""

    __slots__ = ("_key", "_dask", "_length", "_parents", "_task", "_size")

    # numpy defers binary operators to us (``ndarray + Delayed`` is a Delayed,
    # not an object array of Delayed values)
    __array_ufunc__ = None

    def __init__(self, key: Any, dsk: dict | None, length: int | None = None,
                 parents: tuple = (), task: Any = _NO_TASK):
        setattr_ = object.__setattr__  # __setattr__ below refuses most names
        setattr_(self, "_key", key)
        setattr_(self, "_dask", dsk)
        setattr_(self, "_length", length)
        setattr_(self, "_parents", parents)
        setattr_(self, "_task", task)
        # At least the number of tasks of the whole graph (inputs shared by
        # several paths are counted once per path): a graph whose bound is
        # small is small, so only a big bound is ever counted exactly.
        size = (len(dsk) if dsk else 0) + (task is not _NO_TASK)
        for p in parents:
            size += p._size if isinstance(p, Delayed) else 1
        setattr_(self, "_size", size if size < _SIZE_CAP else _SIZE_CAP)

    @property
    def key(self) -> Any:
        return self._key

    @property
    def dask(self) -> dict:
        return self.__shmdask_graph__()

    # -- collection protocol ---------------------------------------------

    def __shmdask_graph__(self) -> dict:
        if self._parents or self._task is not _NO_TASK:
            object.__setattr__(self, "_dask", _materialize(self))
            object.__setattr__(self, "_parents", ())
            object.__setattr__(self, "_task", _NO_TASK)
        return self._dask

    def __shmdask_lazy_graph__(self, min_tasks: int) -> Mapping | None:
        """The graph as a :class:`DelayedGraph` (merged as it is read) when it
        has ``min_tasks`` tasks or more, else None (``__shmdask_graph__`` serves)."""
        if self._size < min_tasks:
            return None
        if not self._parents and self._task is _NO_TASK:  # merged already
            return self._dask if len(self._dask) >= min_tasks else None
        return DelayedGraph(self) if _count_at_least(self, min_tasks) else None

    def __shmdask_keys__(self) -> list:
        return [self._key]

    def __shmdask_postcompute__(self) -> tuple:
        return _finalize_first, ()

    def __shmdask_postpersist__(self) -> tuple:
        return _rebuild_delayed, (self._key, self._length)

    def __shmdask_tokenize__(self) -> Any:
        return self._key

    def __reduce__(self) -> tuple:
        # The whole graph travels, merged: the lazy parts (parents, and the
        # _NO_TASK marker, whose identity would not survive pickling) stay here.
        return _rebuild_delayed, (self.__shmdask_graph__(), self._key, self._length)

    def compute(self, **kwargs: Any) -> Any:
        return base.compute(self, **kwargs)[0]

    def persist(self, **kwargs: Any) -> Delayed:
        return base.persist(self, **kwargs)[0]

    def visualize(self, filename: str | None = None, **kwargs: Any) -> Any:
        return base.visualize(self, filename=filename, **kwargs)

    # -- behaving like the value ---------------------------------------------

    def __repr__(self) -> str:
        return f"Delayed({self._key!r})"

    def __hash__(self) -> int:
        return hash(self._key)

    def __dir__(self) -> list:
        return sorted(set(dir(type(self))) | {"key", "dask"})

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(f"Delayed has no attribute {attr!r}")
        return DelayedAttr(self, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        # only the slots themselves (set by __init__, copy and unpickling)
        if any(attr in getattr(cls, "__slots__", ()) for cls in type(self).__mro__):
            object.__setattr__(self, attr, value)
        else:
            raise TypeError("Delayed objects are immutable")

    def __setitem__(self, index: Any, value: Any) -> None:
        raise TypeError("Delayed objects are immutable")

    def __bool__(self) -> bool:
        raise TypeError(
            "Truth of a Delayed object is not known until it is computed: "
            "call .compute() first, or branch inside a delayed function"
        )

    def __iter__(self) -> Iterator[Delayed]:
        if self._length is None:
            raise TypeError(
                "Delayed objects of unspecified length are not iterable; "
                "pass nout= to delayed() to unpack the result"
            )
        for i in range(self._length):
            yield self[i]

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("Delayed objects of unspecified length have no len(); pass nout=")
        return self._length

    def __call__(self, *args: Any, pure: bool | None = None, dask_key_name: Any = None,
                 **kwargs: Any) -> Delayed:
        return _call(self, args, kwargs, pure=bool(pure), name=None, key=dask_key_name,
                     nout=None)

    def __getitem__(self, index: Any) -> Delayed:
        return _call(operator.getitem, (self, index), {}, pure=True, name="getitem",
                     key=None, nout=None)

    # Operators are added below by _bind_operators.


class DelayedAttr(Delayed):
    """``obj.attr``: a Delayed that calls ``obj.attr(...)`` in one task."""

    __slots__ = ("_obj", "_attr")

    def __init__(self, obj: Delayed, attr: str):
        key = f"getattr-{tokenize(obj.key, attr)}"
        Delayed.__init__(self, key, None, None, (obj,), (operator.attrgetter(attr), obj.key))
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_attr", attr)

    def __call__(self, *args: Any, pure: bool | None = None, dask_key_name: Any = None,
                 **kwargs: Any) -> Delayed:
        return _call(_call_method, (self._obj, self._attr, list(args), kwargs), {},
                     pure=bool(pure), name=self._attr, key=dask_key_name, nout=None)


def _funcname(func: Any) -> str:
    while hasattr(func, "func"):  # functools.partial
        func = func.func
    name = getattr(func, "__name__", None) or type(func).__name__
    return "lambda" if name == "<lambda>" else name


_FUNCTION_TYPES = frozenset({types.FunctionType, types.BuiltinFunctionType})


def _call(func: Any, args: tuple, kwargs: dict, *, pure: bool, name: str | None, key: Any,
          nout: int | None) -> Delayed:
    """One task applying ``func`` to ``args``/``kwargs`` (which may hold Delayed)."""
    if type(func) in _FUNCTION_TYPES:  # a plain function: nothing to unpack
        func_task, func_colls = func, []
    else:
        func_task, func_colls = unpack_collections(func)
    args_task, arg_colls = [], []
    for arg in args:
        arg_task, colls = unpack_collections(arg)
        args_task.append(arg_task)
        if colls:
            arg_colls.extend(colls)
    if kwargs:
        kwargs_task, kw_colls = unpack_collections(kwargs)
        task = (_call_with_kwargs, func_task, args_task, kwargs_task)
    else:
        kw_colls = []
        task = (func_task, *args_task) if callable(func_task) else (
            _call_with_kwargs, func_task, args_task, {})
    if key is None:
        prefix = name or (key_split(func.key) if isinstance(func, Delayed) else _funcname(func))
        key = f"{prefix}-{_new_token(pure, func_task, args_task, kwargs)}"
    dsk, parents = _split_inputs(func_colls + arg_colls + kw_colls)
    return Delayed(key, dsk, nout, parents, task)


class DelayedFunction:
    """``delayed(f)``: calling it builds a task instead of calling ``f``."""

    def __init__(self, func: Callable, pure: bool, nout: int | None, name: str | None):
        self.func = func
        self.pure = pure
        self.nout = nout
        self.name = name
        self.__name__ = _funcname(func)
        self.__doc__ = getattr(func, "__doc__", None)
        self.__wrapped__ = func

    def __call__(self, *args: Any, pure: bool | None = None, dask_key_name: Any = None,
                 **kwargs: Any) -> Delayed:
        return _call(self.func, args, kwargs, pure=self.pure if pure is None else pure,
                     name=self.name or self.__name__, key=dask_key_name, nout=self.nout)

    def __repr__(self) -> str:
        return f"delayed({self.__name__})"

    def __reduce__(self) -> tuple:
        return (DelayedFunction, (self.func, self.pure, self.nout, self.name))


def delayed(obj: Any = None, *, pure: bool = False, nout: int | None = None,
            name: str | None = None, traverse: bool = True) -> Any:
    """Wrap a function or value so that operations on it build a task graph.

    ``@delayed`` and ``@delayed(pure=True)`` decorate functions; ``delayed(value)``
    wraps a value (containers holding Delayed values become one task).
    """
    if obj is None:  # used as @delayed(pure=True)
        return lambda f: delayed(f, pure=pure, nout=nout, name=name, traverse=traverse)
    if nout is not None and (not isinstance(nout, int) or nout < 0):
        raise ValueError(f"nout must be a non-negative int or None, not {nout!r}")
    if isinstance(obj, Delayed):
        return obj
    if isinstance(obj, DelayedFunction):
        return obj
    if callable(obj) and not base.is_collection(obj) and not isinstance(obj, type(None)):
        return DelayedFunction(obj, pure, nout, name)
    task, collections = unpack_collections(obj) if traverse else (obj, [])
    if name is not None:
        key = name
    else:
        token = tokenize(task) if (pure or not collections) and _cheap(obj) else unique_token()
        key = f"{type(obj).__name__}-{token}"
    dsk, parents = _split_inputs(collections)
    return Delayed(key, dsk, nout, parents, task if collections else (base.Literal(obj),))


def _cheap(obj: Any) -> bool:
    return obj is None or type(obj) in (int, float, str, bool, bytes, complex)


def _bind_operators() -> None:
    def binary(op: Callable, reflected: bool = False) -> Callable:
        def method(self: Delayed, other: Any) -> Delayed:
            args = (other, self) if reflected else (self, other)
            return _call(op, args, {}, pure=True, name=op.__name__.strip("_"), key=None,
                         nout=None)
        return method

    def unary(op: Callable) -> Callable:
        def method(self: Delayed) -> Delayed:
            return _call(op, (self,), {}, pure=True, name=op.__name__.strip("_"), key=None,
                         nout=None)
        return method

    for name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
                 "and", "or", "xor", "lshift", "rshift"):
        op = getattr(operator, f"{name}_" if name in ("and", "or") else name)
        setattr(Delayed, f"__{name}__", binary(op))
        setattr(Delayed, f"__r{name}__", binary(op, reflected=True))
    Delayed.__divmod__ = binary(divmod)
    Delayed.__rdivmod__ = binary(divmod, reflected=True)
    for name in ("lt", "le", "eq", "ne", "gt", "ge"):
        setattr(Delayed, f"__{name}__", binary(getattr(operator, name)))
    for name in ("neg", "pos", "invert", "abs"):
        setattr(Delayed, f"__{name}__", unary(getattr(operator, name)))


_bind_operators()
