"""Task graphs: dask's classic graph spec and the pure functions over it.

A graph is a plain mapping ``key -> computation``::

    key          str  |  (name: str, i, j, ...)         e.g. "inc-1f2e", ("x-ab12", 0, 3)
    computation  literal | key | task | [computation, ...]
    task         (callable, computation, computation, ...)

Everything here takes such a mapping and returns new values; nothing does I/O
or touches a scheduler, so each helper is tested alone and the schedulers,
the collections and the drawing code all share one definition of "what
depends on what".

Flow through a ``compute()``::

    collections ──merge──▶ graph ──cull(keys)──▶ fuse_linear ──▶ order ──▶ scheduler
                                                                       │
                        execute_task(computation, {dep_key: value}) ◀──┘ (on a worker)

When is a value a key?  Exactly when it is a str or a tuple and names a key
of the graph being run.  Anything else is a literal, and containers are read
as dask's own schedulers read them: lists, non-key tuples and sets are looked
into (so ``(f, ("x", 2))`` passes ``(value_of_x, 2)`` when ``"x"`` is a key,
and a task nested in them runs), while dicts are literals whose contents are
never evaluated.  A graph that dask's ``dask.get`` accepts therefore means the
same here.  A missing dependency can only be detected for values the caller
declares as keys (see :func:`check_graph`): an argument naming no key is data.

dask's task spec
----------------
Graphs that dask hands a scheduler today mix classic tuples with the node
objects of ``dask._task_spec``, and every helper here reads those natively:

    Task(key, func, *args, **kwargs)   a call; List/Tuple/Set/Dict are Tasks that
                                       build a container
    TaskRef(key)                       the value of another key (so is a
                                       dask.distributed Future: a TaskRef subclass)
    Alias(key, target)                 the value of ``target``
    DataNode(key, value)               ``value`` as is

Inside a node the rules are the spec's, not the classic ones: only TaskRefs
and nested nodes are references (a str or tuple argument is data even when it
names a key), and a TaskRef names its key whether or not this graph holds it
(a missing one is reported by :func:`cull`).  A spec node met in a classic
computation means what it means to dask (``(f, TaskRef("x"))`` passes x's
value).  A node type not listed above (a new or third-party GraphNode) is an
:class:`UnknownNodeError` as soon as a graph holding it is read: it must never
reach a user as if it were a result.  dask itself is not imported here: only
objects of an already imported ``dask._task_spec`` can be spec nodes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any

Key = str | tuple
Graph = Mapping[Key, Any]


class CycleError(ValueError):
    """The graph has a cycle; ``cycle`` lists the keys around it, in order."""

    def __init__(self, cycle: list):
        self.cycle = cycle
        path = " -> ".join(map(repr, cycle + cycle[:1]))
        super().__init__(f"task graph has a cycle: {path}")


def is_task(x: Any) -> bool:
    """A task is a non-empty tuple whose first element is callable."""
    return type(x) is tuple and bool(x) and callable(x[0])


def is_key_shaped(x: Any) -> bool:
    """True for a str, or a tuple ``(str, int, ...)``: what a key may look like."""
    if type(x) is str:
        return True
    return (
        type(x) is tuple
        and bool(x)
        and type(x[0]) is str
        and all(type(i) is int for i in x[1:])
    )


def _refers(x: Any, dsk: Mapping) -> bool:
    try:
        return x in dsk
    except TypeError:  # unhashable literal
        return False


# -- dask task-spec nodes ---------------------------------------------------------

#: What a spec node is to shmdask.
TASK, REF, ALIAS, DATA = "task", "ref", "alias", "data"


class UnknownNodeError(TypeError):
    """A graph holds a dask task-spec node type that shmdask cannot run."""

    def __init__(self, typ: type):
        self.node_type = typ
        super().__init__(
            f"task graph holds a {typ.__module__}.{typ.__qualname__} node, a dask task-spec "
            "type shmdask does not know how to run (it knows Task, List, Tuple, Set, Dict, "
            "TaskRef, Alias and DataNode); compute this collection with a dask scheduler"
        )


#: type -> its kind (or None: not a spec node), filled as types are met.
_node_kinds: dict[type, str | None] = {}


def _classify(typ: type) -> str | None:
    spec = sys.modules.get("dask._task_spec")
    kind = None
    if spec is not None and issubclass(typ, (spec.GraphNode, spec.TaskRef)):
        kind = {spec.Task: TASK, spec.List: TASK, spec.Tuple: TASK, spec.Set: TASK,
                spec.Dict: TASK, spec.Alias: ALIAS, spec.DataNode: DATA}.get(typ)
        if kind is None:
            # a TaskRef subclass (dask.distributed's Future) still just names a key;
            # a GraphNode subclass may run anything: refuse what we cannot read
            if not issubclass(typ, spec.TaskRef) or issubclass(typ, spec.GraphNode):
                raise UnknownNodeError(typ)
            kind = REF
    # Caching None is safe even before dask is imported: a type that existed
    # then cannot be a subclass of a spec class made later.
    _node_kinds[typ] = kind
    return kind


def node_kind(x: Any) -> str | None:
    """``TASK``, ``REF``, ``ALIAS`` or ``DATA`` for a dask task-spec node, None
    for anything else; :class:`UnknownNodeError` for a spec node we cannot run."""
    typ = type(x)
    try:
        return _node_kinds[typ]
    except KeyError:
        return _classify(typ)


def _node_references(node: Any, kind: str, refs: list) -> None:
    """Append the keys a spec node refers to (repeats included)."""
    if kind is REF:
        refs.append(node.key)
        return
    if kind is ALIAS:
        refs.append(node.target)
        return
    if kind is DATA:
        return
    stack = [*node.args, *node.kwargs.values()]
    while stack:
        x = stack.pop()
        k = node_kind(x)
        if k is TASK:
            stack.extend(x.args)
            stack.extend(x.kwargs.values())
        elif k is REF:
            refs.append(x.key)
        elif k is ALIAS:
            refs.append(x.target)
        # DATA nodes and everything else are data


def key_references(computation: Any, dsk: Mapping) -> list:
    """Every reference to a key inside ``computation``, repeats included.

    Classic values refer to keys of ``dsk`` only; spec nodes refer to the keys
    they name, in ``dsk`` or not.
    """
    refs: list = []
    stack = [computation]
    while stack:
        x = stack.pop()
        typ = type(x)
        if typ is tuple:
            if x and callable(x[0]):
                stack.extend(x[1:])
            elif _refers(x, dsk):
                refs.append(x)
            else:  # a literal tuple: dask looks inside it
                stack.extend(x)
        elif typ is list or typ is set or typ is frozenset:
            stack.extend(x)
        elif typ is str:
            if x in dsk:
                refs.append(x)
        elif typ is not dict and (kind := node_kind(x)) is not None:
            _node_references(x, kind, refs)
        # dicts and everything else are literals
    return refs


def find_keys(computation: Any, dsk: Mapping) -> set:
    """Keys referenced anywhere inside ``computation`` (see :func:`key_references`)."""
    return set(key_references(computation, dsk))


def get_dependencies(dsk: Graph, key: Key) -> set:
    """The keys that ``dsk[key]`` needs."""
    return find_keys(dsk[key], dsk)


def dependencies_of(dsk: Graph) -> dict:
    """``key -> set of keys it needs`` for every key of the graph.

    A key whose value is a reference to itself (a dask.distributed Future in
    a graph dask built: data another scheduler holds) needs nothing.
    """
    return {k: set() if is_held_elsewhere(k, v) else find_keys(v, dsk)
            for k, v in dsk.items()}


def is_held_elsewhere(key: Key, value: Any) -> bool:
    """``value`` stands for ``key``'s own data, held by a scheduler (a Future of
    dask.distributed or another TaskRef subclass under its own key)."""
    return type(value) not in (tuple, str, list) and node_kind(value) is REF and \
        value.key == key


def reverse_dependencies(deps: Mapping) -> dict:
    """``key -> set of keys that need it`` from a dependencies mapping.

    Dependencies outside the mapping (keys a scheduler already holds) are
    ignored.
    """
    dependents: dict = {k: set() for k in deps}
    for k, ds in deps.items():
        for d in ds:
            users = dependents.get(d)
            if users is not None:
                users.add(k)
    return dependents


def _find_cycle(deps: Mapping, among: Iterable) -> list:
    """Walk dependencies from an unfinished key until a key repeats."""
    among = set(among)
    start = next(iter(among))
    path: list = []
    seen: dict = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in deps[node] if d in among)
    return path[seen[node]:]


def toposort(dsk: Graph, dependencies: Mapping | None = None) -> list:
    """Keys ordered so that every key comes after its dependencies.

    Raises :class:`CycleError` naming the keys of a cycle.  Dependencies
    outside the graph count as done.
    """
    deps = dependencies if dependencies is not None else dependencies_of(dsk)
    # One pass over the edges: dependents (lists, made only for keys that
    # have some: allocations are what costs here) and the number of in-graph
    # dependencies each key waits for.
    dependents: dict = {}
    waiting = dict.fromkeys(deps, 0)
    for k, ds in deps.items():
        for d in ds:
            if d in waiting:
                users = dependents.get(d)
                if users is None:
                    dependents[d] = [k]
                else:
                    users.append(k)
                waiting[k] += 1
    ready = [k for k, n in waiting.items() if n == 0]
    out = []
    no_users: tuple = ()
    while ready:
        k = ready.pop()
        out.append(k)
        for d in dependents.get(k, no_users):
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    if len(out) != len(deps):
        raise CycleError(_find_cycle(deps, [k for k, n in waiting.items() if n > 0]))
    return out


def check_keys(dsk: Graph, keys: Iterable) -> None:
    """Raise a clear KeyError for requested keys the graph lacks."""
    missing = [k for k in keys if not _refers(k, dsk)]
    if missing:
        shown = ", ".join(map(repr, missing[:5]))
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise KeyError(f"requested key(s) not in the task graph: {shown}{more}")


def check_graph(dsk: Graph, keys: Iterable) -> None:
    """Raise a clear error for requested keys the graph lacks, or a cycle."""
    check_keys(dsk, keys)
    toposort(dsk)


def cull(dsk: Graph, keys: Iterable, dependencies: Mapping | None = None,
         missing: list | None = None) -> tuple[dict, dict]:
    """The part of ``dsk`` needed for ``keys``; returns ``(graph, dependencies)``.

    A dependency the graph lacks (only a spec reference can name one: a key a
    scheduler already holds, say) is a KeyError, or is appended to ``missing``
    when a list is given.
    """
    out: dict = {}
    out_deps: dict = {}
    stack = list(keys)
    stack.reverse()  # popped first to last: the graph keeps the order of ``keys``
    while stack:
        k = stack.pop()
        if k in out:
            continue
        out[k] = v = dsk[k]
        if dependencies is not None:
            ds = dependencies[k]
        else:
            ds = set() if is_held_elsewhere(k, v) else find_keys(v, dsk)
        out_deps[k] = ds
        for d in ds:
            if d not in out:
                if _refers(d, dsk):
                    stack.append(d)
                elif missing is None:
                    raise KeyError(f"task {k!r} depends on key {d!r}, which is not in "
                                   "the task graph")
                elif d not in missing:
                    missing.append(d)
    return out, out_deps


def _substitute(computation: Any, key: Key, value: Any, dsk: Mapping, done: list) -> Any:
    """Replace references to ``key`` inside a classic ``computation`` by ``value``;
    ``done`` gets one item per reference replaced."""
    typ = type(computation)
    if typ is tuple:
        if computation and callable(computation[0]):
            return (computation[0],) + tuple(
                _substitute(a, key, value, dsk, done) for a in computation[1:]
            )
        if computation == key:
            done.append(key)
            return value
        if _refers(computation, dsk):  # another key: not a container to look into
            return computation
        return tuple(_substitute(a, key, value, dsk, done) for a in computation)
    if typ is list:
        return [_substitute(a, key, value, dsk, done) for a in computation]
    if typ is set or typ is frozenset:
        items = [_substitute(a, key, value, dsk, done) for a in computation]
        if all(a is b for a, b in zip(items, computation, strict=True)):
            return computation
        return (typ, items)  # a task: the substituted items need not be hashable
    if typ is str and computation == key:
        done.append(key)
        return value
    # spec nodes nested in a classic task are left alone: the caller sees that
    # fewer references were replaced than exist, and does not fuse
    return computation


def _fuse_pair(a: Key, comp_a: Any, b: Key, comp_b: Any, dsk: Mapping) -> Any:
    """``comp_b`` with its one reference to ``a`` replaced by ``comp_a``, or None
    when the two cannot be fused.

    Classic into classic nests the tuple; a spec Task, Alias or DataNode into a
    spec Task or Alias becomes a nested node (dask evaluates nested nodes in
    place).  Other mixtures are not fused: a classic task inside a spec node
    would be data.
    """
    if key_references(comp_b, dsk).count(a) != 1:
        return None
    if is_task(comp_a) and is_task(comp_b):
        done: list = []
        fused = _substitute(comp_b, a, comp_a, dsk, done)
        return fused if len(done) == 1 else None
    if node_kind(comp_b) in (TASK, ALIAS) and node_kind(comp_a) in (TASK, ALIAS, DATA):
        return comp_b.substitute({a: comp_a}, key=b)
    return None


#: Longest chain folded into one task.  Fused tasks nest, and evaluating
#: (or pickling) a nest recurses once per level, so an unbounded chain of
#: thousands of tasks would exceed Python's recursion limit; 32 tasks per
#: task already makes scheduling overhead negligible.
MAX_FUSED_CHAIN = 32


def fuse_linear(
    dsk: Graph, keys: Iterable = (), dependencies: Mapping | None = None,
    topo: list | None = None,
) -> tuple[dict, dict]:
    """Fuse linear chains ``a -> b -> c`` into one task under the last key.

    ``a`` is folded into its dependent ``b`` when ``a`` has exactly one
    dependent, ``b`` has exactly one dependency and refers to it once, and
    ``a`` is not requested.  The fused computation nests ``a``'s task inside
    ``b``'s (see :func:`_fuse_pair`), so the result is still a graph of the
    same spec; chains longer than
    :data:`MAX_FUSED_CHAIN` are cut into several tasks.  Fan-in is never
    fused: that would trade away parallelism.  Returns ``(graph, dependencies)``.
    ``topo`` may pass a topological order already computed.
    """
    source = dependencies or dependencies_of(dsk)
    if not any(source.values()):  # no edges (a wide graph of lone tasks): no chains
        return dict(dsk), {k: set() for k in source}
    keep = set(keys)
    deps = {k: set(v) for k, v in source.items()}
    dependents = reverse_dependencies(deps)
    out = dict(dsk)
    chain: dict = {}  # key -> number of tasks fused into it
    for a in topo if topo is not None else toposort(dsk, deps):
        users = dependents[a]
        if len(users) != 1 or a in keep:
            continue
        (b,) = users
        if len(deps[b]) != 1:
            continue
        length = chain.get(a, 1) + chain.get(b, 1)
        if length > MAX_FUSED_CHAIN:
            continue
        fused = _fuse_pair(a, out[a], b, out[b], out)
        if fused is None:
            continue
        out[b] = fused
        chain[b] = length
        deps[b] = deps[a]
        for d in deps[a]:
            if d in dependents:  # not a key outside the graph
                dependents[d].discard(a)
                dependents[d].add(b)
        del out[a], deps[a], dependents[a]
    return out, deps


def order(dsk: Graph, dependencies: Mapping | None = None, topo: list | None = None) -> dict:
    """A priority per key (lower runs first) that finishes chains before new ones.

    Depth-first from the outputs: each output's dependencies are visited
    smallest-subtree first, and a key is numbered right after all of its
    dependencies.  Running ready tasks in this order completes one branch
    (and frees its intermediates) before starting the next, which keeps
    memory small, as dask's ordering does.
    """
    deps = dependencies if dependencies is not None else dependencies_of(dsk)
    # Size of each key's subtree (counting shared parts once per path is fine
    # for a tie-breaker and keeps this linear).
    size: dict = {}
    for k in topo if topo is not None else toposort(dsk, deps):
        ds = deps[k]
        size[k] = 1 + sum(size.get(d, 0) for d in ds) if ds else 1

    def sort_key(k: Key) -> tuple:
        return (size[k], str(k))

    needed: set = set()
    for ds in deps.values():
        needed.update(ds)
    # Outputs of equal size keep the graph's order (a stable sort), and cull
    # puts the asked-for keys in the order they were asked for.  A str()
    # tie-break, which the children below still need because sets have no
    # stable order, cost more than all the rest of ordering ten thousand
    # independent tasks.
    outputs = sorted((k for k in deps if k not in needed), key=size.__getitem__)
    priority: dict = {}
    counter = 0
    for root in outputs:
        if not deps[root]:  # a lone task (most of a wide graph): numbered at once
            priority[root] = counter
            counter += 1
            continue
        stack = [(root, False)]
        pop, push = stack.pop, stack.append
        while stack:
            k, expanded = pop()
            if k in priority:
                continue
            if expanded:
                priority[k] = counter
                counter += 1
                continue
            children = [d for d in deps[k] if d not in priority and d in size]
            if not children:  # what pushing it back and popping it at once would do
                priority[k] = counter
                counter += 1
                continue
            push((k, True))
            if len(children) > 1:
                children.sort(key=sort_key, reverse=True)
            for d in children:
                push((d, False))
    return priority


def order_pieces(dsk: Graph, keys: Iterable, first: int = 1_000, largest: int = 50_000,
                 missing: list | None = None) -> Iterator[tuple[dict, dict, dict]]:
    """Cull, find dependencies and order in one depth-first pass, in pieces.

    Yields ``(graph, dependencies, priorities)`` pieces in run order: a key
    comes after its dependencies (in its own piece or an earlier one), and
    priorities count up across pieces.  The first piece holds ``first`` keys,
    so a scheduler can start running while the rest of a huge graph is still
    being walked; pieces then double up to ``largest``.  Depth-first from the
    outputs, a key numbered right after its dependencies: a branch finishes
    before the next starts, as with :func:`order`.  Unlike ``prepare_graph``
    there is no linear fusion and no smallest-subtree-first tie-break, which
    both need the whole graph before the first key can be given out.
    Raises :class:`CycleError`; ``keys`` must be keys of ``dsk``.  A dependency
    the graph lacks is what it is to :func:`cull`: a KeyError, or appended to
    ``missing`` (before the piece that needs it is yielded) when a list is given.
    """
    done: set = set()
    path: dict = {}  # key -> task, expanded and not yet given out: the current DFS path
    graph: dict = {}
    deps: dict = {}
    prio: dict = {}
    absent: set = set()  # missing keys already reported
    counter = 0
    size = first
    stack: list = [(k, None) for k in reversed(list(keys))]
    pop, push = stack.pop, stack.append
    while stack:
        key, ds = pop()
        if ds is None:  # first visit: expand
            if key in done:
                continue
            if key in path:
                cycle = list(path)
                raise CycleError(cycle[cycle.index(key):])
            v = dsk[key]
            ds = set() if is_held_elsewhere(key, v) else find_keys(v, dsk)
            path[key] = v  # read once: a lazy graph writes a task out per read
            push((key, ds))
            for d in ds:
                if d in done or d in absent:
                    continue
                if d in dsk:
                    push((d, None))
                elif missing is None:
                    raise KeyError(f"task {key!r} depends on key {d!r}, which is not in "
                                   "the task graph")
                else:
                    absent.add(d)
                    missing.append(d)
            continue
        graph[key] = path.pop(key)  # every dependency is given out: give this key out
        done.add(key)
        deps[key] = ds
        prio[key] = counter
        counter += 1
        if len(graph) >= size:
            yield graph, deps, prio
            graph, deps, prio = {}, {}, {}
            size = min(2 * size, largest)
    if graph:
        yield graph, deps, prio


def execute_task(computation: Any, data: Mapping) -> Any:
    """Evaluate a computation, taking the values of keys from ``data``."""
    typ = type(computation)
    if typ is tuple:
        if computation and callable(computation[0]):
            func = computation[0]
            return func(*[execute_task(a, data) for a in computation[1:]])
        if _refers(computation, data):
            return data[computation]
        return tuple([execute_task(a, data) for a in computation])
    if typ is list:
        return [execute_task(a, data) for a in computation]
    if typ is set or typ is frozenset:
        return typ([execute_task(a, data) for a in computation])
    if typ is str:
        return data[computation] if computation in data else computation
    if typ is not dict and (kind := node_kind(computation)) is not None:
        return _execute_node(computation, kind, data)
    return computation


def _execute_node(node: Any, kind: str, data: Mapping) -> Any:
    """Evaluate a spec node: only TaskRefs and nested nodes are looked up or run."""
    if kind is TASK:
        args = [_execute_node(a, k, data) if (k := node_kind(a)) is not None else a
                for a in node.args]
        if node.kwargs:
            kwargs = {name: _execute_node(v, k, data) if (k := node_kind(v)) is not None else v
                      for name, v in node.kwargs.items()}
            return node.func(*args, **kwargs)
        return node.func(*args)
    if kind is REF:
        return data[node.key]
    if kind is ALIAS:
        return data[node.target]
    return node.value


def flatten(seq: Any, container: type = list) -> Iterator:
    """Yield the leaves of nested ``container``s (lists, by default)."""
    if isinstance(seq, container):
        for item in seq:
            yield from flatten(item, container)
    else:
        yield seq


_HEX_SUFFIX = re.compile(r"^[0-9a-f]{8,}$")


def key_split(key: Hashable) -> str:
    """The group name of a key: ``'inc-1f2e3d4c5b'`` -> ``'inc'``,
    ``('random_sample-ab12cd34ef', 3)`` -> ``'random_sample'``."""
    if type(key) is tuple:
        key = key[0] if key else ""
    if type(key) is bytes:
        key = key.decode()
    if type(key) is not str:
        return str(key)
    group = _groups.get(key)
    if group is not None:
        return group
    if len(_groups) >= _GROUPS_KEPT:  # unique names (delayed keys) must not pile up
        _groups.clear()
    group = _groups[key] = _split_name(key)
    return group


# Group of a name, for names met before: the keys of one array share a name,
# and every task's record asks for its group.
_groups: dict[str, str] = {}
_GROUPS_KEPT = 4096


def _split_name(key: str) -> str:
    words = key.split("-")
    kept = [words[0]]
    for word in words[1:]:
        if _HEX_SUFFIX.match(word) or word.isdigit():
            break
        kept.append(word)
    return "-".join(kept)


def as_graph(obj: Any) -> dict:
    """A task graph as a dict, from whatever dask hands a scheduler: a dict, a
    HighLevelGraph (or any mapping), or an object whose ``__dask_graph__()``
    gives one (dask's expressions, collections)."""
    if type(obj) is dict:
        return obj
    if not isinstance(obj, Mapping) and callable(getattr(obj, "__dask_graph__", None)):
        obj = obj.__dask_graph__()
        if type(obj) is dict:
            return obj
    if isinstance(obj, Mapping):
        to_dict = getattr(obj, "to_dict", None)  # a HighLevelGraph merges its layers once
        return dict(to_dict()) if callable(to_dict) else dict(obj)
    raise TypeError(f"a task graph must be a mapping (or have __dask_graph__), "
                    f"not {type(obj).__name__}")


def merge(*graphs: Mapping) -> dict:
    out: dict = {}
    for g in graphs:
        out.update(g)
    return out
