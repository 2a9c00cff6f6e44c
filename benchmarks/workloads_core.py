"""Core workloads: the seed's delayed tree and a graph of 10,000 no-op tasks."""

from __future__ import annotations

import uuid


def _inc(x):
    return x + 1


def _dec(x):
    return x - 1


def _add(x, y):
    return x + y


def delayed_tree(api):
    """256 inc/dec/add chains, persist, delayed(sum), then the tree reduction."""
    inc, dec, add = api.delayed(_inc), api.delayed(_dec), api.delayed(_add)
    zs = []
    for i in range(256):
        x = inc(i)
        y = dec(x)
        zs.append(add(x, y))
    zs = api.persist(*zs)
    total = api.delayed(sum)(zs)
    total = total.compute()
    level = list(zs)
    while len(level) > 1:
        level = [add(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    (tree,) = api.compute(level)
    assert tree[0] == total == 65536, (tree, total)
    return total


def _noop():
    return None


def noop_10k(api):
    """10,000 independent no-op tasks in one raw graph: per-task overhead."""
    name = f"noop-{uuid.uuid4().hex}"  # fresh keys: nothing may come from a cache
    dsk = {(name, i): (_noop,) for i in range(10_000)}
    out = api.get(dsk, list(dsk))
    assert len(out) == 10_000
    return len(out)


WORKLOADS = {"delayed_tree": delayed_tree, "noop_10k": noop_10k}
