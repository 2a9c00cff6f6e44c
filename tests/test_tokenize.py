"""Deterministic tokens (shmdask.tokenize)."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import numpy as np
import pytest

from shmdask.tokenize import normalize, tokenize


def inc(x):
    return x + 1


def dec(x):
    return x - 1


def test_token_is_32_hex_chars_and_deterministic():
    t = tokenize(1, "a", [1, 2], {"k": (3, 4)}, None)
    assert len(t) == 32 and int(t, 16) >= 0
    assert t == tokenize(1, "a", [1, 2], {"k": (3, 4)}, None)


@pytest.mark.parametrize(
    "a,b",
    [
        (1, 2),
        (1, 1.0),
        (1, True),
        ("a", b"a"),
        ([1, 2], (1, 2)),
        ([1, 2], [2, 1]),
        ({"a": 1}, {"a": 2}),
        ({"a": 1}, {"b": 1}),
        ({1, 2}, frozenset({1, 2})),
        (0.0, -0.0),
        (None, "None"),
        ((1,), 1),
    ],
)
def test_different_values_give_different_tokens(a, b):
    assert tokenize(a) != tokenize(b)


def test_order_of_dicts_and_sets_does_not_matter():
    assert tokenize({"a": 1, "b": 2}) == tokenize({"b": 2, "a": 1})
    assert tokenize({3, 1, 2}) == tokenize({2, 3, 1})


def test_kwargs_are_part_of_the_token():
    assert tokenize(1, x=2) == tokenize(1, x=2)
    assert tokenize(1, x=2) != tokenize(1, x=3)
    assert tokenize(1, x=2) != tokenize(1, y=2)
    assert tokenize(1) != tokenize(1, x=None)


def test_numpy_arrays_by_content():
    x = np.arange(1000, dtype="f8")
    assert tokenize(x) == tokenize(x.copy())
    y = x.copy()
    y[500] = -1
    assert tokenize(x) != tokenize(y)
    assert tokenize(x) != tokenize(x.astype("f4"))
    assert tokenize(x) != tokenize(x.reshape(10, 100))
    z = np.arange(12).reshape(3, 4)
    assert tokenize(z.T) == tokenize(np.ascontiguousarray(z.T))
    assert tokenize(z[:, ::2]) == tokenize(z[:, ::2].copy())
    assert tokenize(np.array(5)) != tokenize(np.array([5]))
    assert tokenize(np.zeros((0, 3))) != tokenize(np.zeros((3, 0)))


def test_structured_dtypes_with_the_same_size_differ():
    a = np.zeros(2, dtype=[("a", "i4"), ("b", "i4")])
    b = np.zeros(2, dtype=[("x", "f4"), ("y", "f4")])
    assert tokenize(a) != tokenize(b)
    assert tokenize(a) == tokenize(a.copy())


def test_object_arrays_and_numpy_scalars():
    assert tokenize(np.array(["a", None], dtype=object)) == tokenize(
        np.array(["a", None], dtype=object)
    )
    assert tokenize(np.array(["a", 1], dtype=object)) != tokenize(
        np.array(["a", 2], dtype=object)
    )
    assert tokenize(np.float64(1.5)) == tokenize(np.float64(1.5))
    assert tokenize(np.float64(1.5)) != tokenize(np.float32(1.5))


def test_functions_by_name_and_lambdas_by_code():
    assert tokenize(inc) == tokenize(inc)
    assert tokenize(inc) != tokenize(dec)
    assert tokenize(partial(inc, 1)) == tokenize(partial(inc, 1))
    assert tokenize(partial(inc, 1)) != tokenize(partial(inc, 2))
    f = lambda x: x + 1  # noqa: E731
    g = lambda x: x * 2  # noqa: E731
    assert tokenize(f) == tokenize(f)
    assert tokenize(f) != tokenize(g)


def test_a_function_without_an_importable_name_is_pickled_once(monkeypatch):
    import gc
    import importlib

    import cloudpickle

    tokenize_module = importlib.import_module("shmdask.tokenize")  # (the package's
    # ``tokenize`` attribute is the function)

    pickled = []
    real_dumps = cloudpickle.dumps
    monkeypatch.setattr(cloudpickle, "dumps", lambda f, *a: pickled.append(f) or real_dumps(f, *a))
    f = lambda x: x + 1  # noqa: E731
    tokens = {tokenize(f, i) for i in range(100)}  # a client.map over 100 items
    assert len(tokens) == 100 and len(pickled) == 1
    g = lambda x: x * 2  # noqa: E731
    assert tokenize(g) != tokenize(f) and len(pickled) == 2  # each function once
    del f, g, tokens, pickled[:]
    gc.collect()
    assert len(tokenize_module._function_descriptions) == 0  # gone with the functions


def test_custom_tokenize_method():
    class Thing:
        def __init__(self, v):
            self.v = v

        def __shmdask_tokenize__(self):
            return ("thing", self.v)

    assert tokenize(Thing(1)) == tokenize(Thing(1))
    assert tokenize(Thing(1)) != tokenize(Thing(2))


def test_unpicklable_objects_get_a_unique_token():
    import threading

    lock = threading.Lock()
    assert tokenize(lock) != tokenize(lock)  # unique: never shared by mistake
    assert normalize(lock)[0] == "unique"


def test_tokens_are_the_same_in_another_process():
    code = (
        "import numpy as np; from shmdask.tokenize import tokenize; "
        "print(tokenize(1, 'a', [2.5, None], {'k': (1, 2)}, np.arange(10), "
        "np.float32(3), {3, 4}))"
    )
    here = tokenize(1, "a", [2.5, None], {"k": (1, 2)}, np.arange(10), np.float32(3), {3, 4})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True, timeout=60)
    assert out.stdout.strip() == here


class Holder:
    def __init__(self, v):
        self.v = v

    def get(self):
        return self.v

    @classmethod
    def make(cls):
        return cls(0)


def test_bound_methods_include_their_object():
    a, b = Holder(1), Holder(2)
    assert tokenize(a.get) != tokenize(b.get)
    assert tokenize(a.get) == tokenize(Holder(1).get)  # same state, same token
    assert tokenize(a.get) != tokenize(Holder.get)
    assert tokenize(Holder.make) == tokenize(Holder.make)
    assert tokenize([1].append) != tokenize([2].append)


def test_unique_tokens_never_repeat_even_across_fork():
    from shmdask.tokenize import unique_token

    tokens = {unique_token() for _ in range(10_000)}
    assert len(tokens) == 10_000
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report one token and leave at once
        os.write(write, unique_token().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    mine = unique_token()
    assert len(child) == 32 and child not in tokens and child != mine
    assert child[:16] != mine[:16]  # the child drew its own prefix


def test_array_subclasses_and_masks_count():
    a = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])
    b = np.ma.masked_array([1, 2, 3], mask=[0, 0, 0])
    assert tokenize(a) != tokenize(b)
    assert tokenize(a) == tokenize(a.copy())
    assert tokenize(np.ma.masked_array([1, 2], fill_value=7)) != tokenize(
        np.ma.masked_array([1, 2], fill_value=8))

    class Tagged(np.ndarray):
        pass

    plain = np.array([[1, 2]])
    assert tokenize(plain.view(Tagged)) != tokenize(plain)
    assert tokenize(plain.view(Tagged)) == tokenize(plain.copy().view(Tagged))


def test_objects_answering_every_attribute_still_tokenize():
    class Anything:
        def __init__(self, v):
            self.v = v

        def __getattr__(self, name):
            return 1

    # no crash; such an object does not pickle either, so its token is unique
    assert len(tokenize(Anything(1))) == 32
    assert tokenize(Anything(1)) != tokenize(Anything(2))
