"""``shmdask.delayed``: building graphs from function calls and operators."""

from __future__ import annotations

import copy
import operator
import pickle

import cloudpickle
import numpy as np
import pytest

import shmdask
from shmdask import delayed
from shmdask.delayed import Delayed
from shmdask.graph import key_split


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def ident(*args, **kwargs):
    return (args, kwargs) if kwargs else args


# -- wrapping functions and values ------------------------------------------------


def test_delayed_function_call_and_compute():
    d = delayed(inc)(1)
    assert isinstance(d, Delayed)
    assert key_split(d.key) == "inc"
    assert d.key in d.dask
    assert d.compute() == 2
    assert d.compute(scheduler="sync") == 2


def test_decorator_forms():
    @delayed
    def double(x):
        return 2 * x

    @delayed(pure=True)
    def triple(x):
        return 3 * x

    assert double(4).compute() == 8
    assert double(4).key != double(4).key  # impure: every call is a new task
    assert triple(4).compute() == 12
    assert triple(4).key == triple(4).key
    assert triple(4).key != triple(5).key
    assert double.__name__ == "double"


def test_delayed_value():
    d = delayed(5)
    assert d.compute() == 5
    assert (d + 1).compute() == 6
    arr = np.arange(4)
    out = delayed(arr).compute()
    assert isinstance(out, np.ndarray) and (out == arr).all()
    assert delayed(d) is d
    # a value that looks like a task or a key is still a value
    assert delayed((inc, 1)).compute() == (inc, 1)
    assert delayed("x").compute() == "x"


def test_delayed_containers_of_delayed():
    a, b = delayed(1), delayed(2)
    assert delayed([a, b]).compute() == [1, 2]
    assert delayed((a, 3)).compute() == (1, 3)
    assert delayed({"a": a, "b": [b]}).compute() == {"a": 1, "b": [2]}
    assert delayed({a, 7}).compute() == {1, 7}


def test_pure_keys_are_deterministic():
    assert delayed(inc, pure=True)(1).key == delayed(inc, pure=True)(1).key
    assert delayed(inc, pure=True)(1).key != delayed(inc, pure=True)(2).key
    assert delayed(inc, pure=True)(1).key != delayed(add, pure=True)(1, 0).key
    assert delayed(inc)(1).key != delayed(inc)(1).key
    # call-time pure= wins over the wrapper's setting
    assert delayed(inc)(1, pure=True).key == delayed(inc)(1, pure=True).key
    assert delayed(inc, pure=True)(1, pure=False).key != delayed(inc, pure=True)(1).key
    # kwargs count
    f = delayed(ident, pure=True)
    assert f(1, k=2).key == f(1, k=2).key
    assert f(1, k=2).key != f(1, k=3).key


def test_pure_keys_tokenize_numpy_arrays_by_content():
    x = np.arange(100.0)
    y = x.copy()
    f = delayed(np.sum, pure=True)
    assert f(x).key == f(y).key
    y[17] += 1
    assert f(x).key != f(y).key
    assert f(x).compute() == x.sum()


def test_pure_keys_depend_on_delayed_inputs():
    a = delayed(inc, pure=True)(1)
    b = delayed(inc, pure=True)(2)
    f = delayed(add, pure=True)
    assert f(a, 1).key == f(a, 1).key
    assert f(a, 1).key != f(b, 1).key


def test_name_and_dask_key_name():
    d = delayed(inc, name="myname")(1)
    assert key_split(d.key) == "myname"
    e = delayed(inc)(1, dask_key_name="exact-key")
    assert e.key == "exact-key"
    assert e.compute() == 2
    t = delayed(inc)(1, dask_key_name=("tuple-key", 3))
    assert t.key == ("tuple-key", 3)
    assert (t + 1).compute() == 3
    v = delayed(10, name="ten")
    assert v.key == "ten"
    assert (v * 2).compute() == 20


def test_nout_unpacking():
    f = delayed(lambda: (1, 2, 3), nout=3)
    x, y, z = f()
    assert (x.compute(), y.compute(), z.compute()) == (1, 2, 3)
    assert len(f()) == 3
    assert list(delayed(lambda: (), nout=0)()) == []
    (w,) = delayed(lambda: [9], nout=1)()
    assert w.compute() == 9


def test_unpacking_without_nout_is_a_clear_typeerror():
    d = delayed(lambda: (1, 2))()
    with pytest.raises(TypeError, match="nout"):
        x, y = d
    with pytest.raises(TypeError, match="nout"):
        len(d)


def test_bad_nout():
    with pytest.raises(ValueError, match="nout"):
        delayed(inc, nout=-1)
    with pytest.raises(ValueError, match="nout"):
        delayed(inc, nout="2")


def test_bool_raises_and_explains():
    d = delayed(1)
    with pytest.raises(TypeError, match="compute"):
        bool(d)
    with pytest.raises(TypeError):
        if d:
            pass


# -- operators ------------------------------------------------------------------------


BINARY = [
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
    operator.mod, operator.pow, operator.and_, operator.or_, operator.xor,
    operator.lshift, operator.rshift, operator.lt, operator.le, operator.eq,
    operator.ne, operator.gt, operator.ge, divmod,
]


@pytest.mark.parametrize("op", BINARY, ids=lambda op: op.__name__)
def test_binary_and_reflected_operators(op):
    a, b = 7, 3
    da, db = delayed(a), delayed(b)
    assert op(da, db).compute(scheduler="sync") == op(a, b)
    assert op(da, b).compute(scheduler="sync") == op(a, b)
    if op not in (operator.lt, operator.le, operator.eq, operator.ne, operator.gt,
                  operator.ge):
        assert op(a, db).compute(scheduler="sync") == op(a, b)  # reflected


def test_reflected_comparisons_swap():
    d = delayed(3)
    assert (5 > d).compute() is True  # becomes d < 5
    assert (5 == d).compute() is False


def test_matmul():
    x = np.arange(4).reshape(2, 2)
    assert (delayed(x) @ delayed(x)).compute().tolist() == (x @ x).tolist()
    assert (x @ delayed(x)).compute().tolist() == (x @ x).tolist()


def test_ndarray_on_the_left_defers_to_delayed():
    x = np.arange(3)
    y = x + delayed(1)
    assert isinstance(y, Delayed)
    assert y.compute().tolist() == [1, 2, 3]
    assert (x < delayed(2)).compute().tolist() == [True, True, False]


@pytest.mark.parametrize("op,value", [(operator.neg, 5), (operator.pos, -5), (abs, -5),
                                      (operator.invert, 5)])
def test_unary_operators(op, value):
    assert op(delayed(value)).compute() == op(value)


def test_operators_on_arrays_stay_lazy():
    x = delayed(np.ones(3))
    y = (x + 1) * 2 - x
    assert isinstance(y, Delayed)
    assert y.compute().tolist() == [3.0, 3.0, 3.0]


# -- items, attributes, methods -----------------------------------------------------


class Thing:
    factor = 10

    def __init__(self, v):
        self.v = v

    def scaled(self, k, offset=0):
        return self.v * k * self.factor + offset


def test_getitem_getattr_and_methods():
    d = delayed({"x": [1, 2, 3], "y": "why"})
    assert d["x"][1].compute() == 2
    assert d["y"].compute() == "why"
    assert d.get("x").compute() == [1, 2, 3]
    assert sorted(d.keys().compute()) == ["x", "y"]
    t = delayed(Thing)(2)
    assert t.v.compute() == 2
    assert t.factor.compute() == 10
    assert t.scaled(3).compute() == 60
    assert t.scaled(3, offset=delayed(5)).compute() == 65
    assert t.scaled(k=delayed(1)).compute() == 20
    s = delayed(np.arange(10))
    assert s[2:5].compute().tolist() == [2, 3, 4]
    assert s[delayed(1):delayed(3)].compute().tolist() == [1, 2]
    assert s.sum().compute() == 45


def test_method_call_dask_key_name():
    d = delayed([3, 1, 2])
    c = d.count(1, dask_key_name="count-of-ones")
    assert c.key == "count-of-ones"
    assert c.compute() == 1


def test_private_attributes_are_not_delayed():
    d = delayed(1)
    with pytest.raises(AttributeError):
        d._secret  # noqa: B018
    assert not hasattr(d, "__array__")


def test_delayed_is_immutable():
    d = delayed([1])
    with pytest.raises(TypeError):
        d.x = 1
    with pytest.raises(TypeError):
        d[0] = 1


# -- arguments nested in containers ---------------------------------------------------


def test_arguments_nested_in_lists_tuples_dicts_and_sets():
    a, b = delayed(1), delayed(inc)(1)
    f = delayed(ident)
    out = f([a, (b, {"k": a, b: "value-keyed-by-delayed"})], {a, 5}, z=[b]).compute()
    assert out == (([1, (2, {"k": 1, 2: "value-keyed-by-delayed"})], {1, 5}), {"z": [2]})
    assert type(out[0][0][1]) is tuple


def test_literal_arguments_are_never_read_as_keys_or_tasks():
    data = delayed(5, name="data")
    f = delayed(ident)
    assert f(data, "data").compute() == (5, "data")
    assert f(data, ("data", 1)).compute() == (5, ("data", 1))
    assert f(data, [data, "data"]).compute() == (5, [5, "data"])
    assert f((inc, 1)).compute() == ((inc, 1),)
    assert f([(inc, 1)]).compute() == ([(inc, 1)],)
    assert f(data, {"f": (inc, 1)}).compute() == (5, {"f": (inc, 1)})
    assert f(data, k="data").compute() == ((5,), {"k": "data"})
    g = delayed({"data": 1, "other": 2})
    assert g["data"].compute() == 1


def test_attribute_named_like_a_key():
    real = delayed(3 + 4j, name="real")
    assert real.real.compute() == 3.0
    assert real.imag.compute() == 4.0


def test_delayed_function_receives_delayed_function_results():
    f = delayed(add)
    total = f(f(1, 2), f(delayed(inc)(1), 10))
    assert total.compute() == 15


def test_delayed_function_as_an_argument_is_the_plain_function():
    def apply_all(f, xs):
        return [f(x) for x in xs]

    assert delayed(apply_all)(delayed(inc), [1, 2]).compute() == [2, 3]
    assert delayed(apply_all)(delayed(inc), delayed([1, 2])).compute() == [2, 3]


def test_calling_a_delayed_value():
    fn = delayed(inc, pure=True)
    d = delayed(lambda: inc)()  # a Delayed whose value is a function
    assert d(41).compute() == 42
    assert fn(1).compute() == 2


# -- collection protocol ----------------------------------------------------------------


def test_collection_protocol():
    a = delayed(inc)(1)
    b = delayed(add)(a, 10)
    assert b.__shmdask_keys__() == [b.key]
    graph = b.__shmdask_graph__()
    assert graph is b.dask
    assert set(graph) == {a.key, b.key}
    finalize, extra = b.__shmdask_postcompute__()
    assert finalize([12], *extra) == 12
    assert shmdask.get(graph, b.key) == 12


def test_persist_holds_the_result():
    calls = []

    def slow(x):
        calls.append(x)
        return x * 2

    d = delayed(slow)(21)
    p = d.persist(scheduler="sync")
    assert isinstance(p, Delayed)
    assert p.key == d.key
    assert len(calls) == 1
    assert p.compute() == 42
    assert (p + 1).compute() == 43
    assert len(calls) == 1  # the persisted value is not recomputed
    assert len(p.dask) == 1
    (q,) = shmdask.persist(d, scheduler="threads")
    assert q.compute() == 42 and len(calls) == 2


def test_persist_keeps_nout():
    x, y = delayed(lambda: (1, 2), nout=2)().persist()
    assert (x.compute(), y.compute()) == (1, 2)


def test_pickle_and_copy():
    class Obj:
        z = 5

    a = delayed(inc)(delayed(1))
    assert pickle.loads(pickle.dumps(a)).compute() == 2
    assert copy.copy(a).compute() == 2
    assert copy.deepcopy(a).compute() == 2
    attr = delayed(Obj()).z
    assert pickle.loads(cloudpickle.dumps(attr)).compute() == 5
    f = delayed(sum)
    assert pickle.loads(cloudpickle.dumps(f))([1, 2]).compute() == 3


def test_hash_and_repr():
    a = delayed(1)
    assert a.key in repr(a)
    assert {a: 1}[a] == 1


class Box:
    def __init__(self, v):
        self.v = v

    def get(self):
        return self.v


def test_pure_calls_of_methods_of_different_objects_differ():
    x = delayed(Box(1).get, pure=True)()
    y = delayed(Box(2).get, pure=True)()
    assert x.key != y.key
    assert shmdask.compute(x, y) == (1, 2)


# -- graphs are merged once, when asked for ---------------------------------------------


def test_a_tree_of_calls_holds_its_inputs_not_copies_of_their_graphs():
    add = delayed(lambda a, b: a + b, pure=True)
    level = [delayed(i, name=f"leaf-{i}") for i in range(64)]
    nodes = []
    while len(level) > 1:
        level = [add(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        nodes.extend(level)
    root = level[0]
    # no call made a dict of its inputs' tasks: each holds its own task and inputs
    assert all(n._dask is None and len(n._parents) == 2 for n in nodes)
    graph = root.dask
    assert len(graph) == 64 + 63
    assert {f"leaf-{i}" for i in range(64)} <= set(graph)
    assert root.compute(scheduler="sync") == sum(range(64))
    assert root.dask is graph  # merged once, then kept
    # an inner node still answers with its own part only
    assert len(nodes[0].dask) == 3


def test_shared_inputs_appear_once_and_own_task_wins():
    x = delayed(1, name="x")
    y = delayed(lambda a: a + 1)(x)
    z = delayed(lambda a, b: a * b)(y, y)
    w = delayed(lambda a, b: a - b)(z, x)
    assert w.compute(scheduler="sync") == 4 - 1
    assert set(w.dask) == {"x", y.key, z.key, w.key}


def test_a_pickled_delayed_computes_the_same():
    # A Delayed built lazily (parents not merged yet) crosses processes whole.
    import operator
    import pickle

    from shmdask import delayed

    a = delayed(sum)([1, 2, 3])
    b = delayed(max)(a, 2)
    c = delayed(operator.mul)(a, b)
    copy = pickle.loads(pickle.dumps(c))
    assert copy.key == c.key
    assert copy.compute(scheduler="sync") == c.compute(scheduler="sync") == 36
