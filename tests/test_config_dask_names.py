"""``shmdask.config`` under dask's dotted names: mapping, nesting, refusal with hints."""

from __future__ import annotations

import pytest

import shmdask
from shmdask import config
from shmdask.scheduler.engine import Engine
from shmdask.scheduler.state import KilledWorker
from tests.test_local_scheduler import FakeWorker


def inc(x):
    return x + 1


def test_dask_names_set_shmdask_options():
    with shmdask.config.set({"distributed.scheduler.allowed-failures": 5}):
        assert config.get("allowed_failures") == 5
        assert config.get("distributed.scheduler.allowed-failures") == 5
        assert config.get("distributed.scheduler.allowed_failures") == 5  # _ and - alike
    assert config.get("allowed_failures") == 2
    with shmdask.config.set({"array.chunk-size": "64 MB", "optimization.fuse.active": False}):
        assert config.get("array_chunk_size") == 64_000_000
        assert config.get("optimize") is False
    with shmdask.config.set({"distributed.comm.timeouts.connect": "30s"}):
        assert config.get("connect_timeout") == 30.0


def test_nested_dicts_as_in_dask():
    with shmdask.config.set({"distributed": {"scheduler": {"allowed-failures": 7}},
                             "array": {"chunk-size": "1 MiB"}}):
        assert config.get("allowed_failures") == 7
        assert config.get("array.chunk-size") == 2**20


def test_unknown_names_are_refused_with_the_nearest_known_ones():
    with pytest.raises(KeyError, match="did you mean 'distributed.scheduler.allowed-failures'"):
        shmdask.config.set({"distributed.scheduler.allowed-failure": 1})
    with pytest.raises(KeyError, match="array.chunk-size"):
        shmdask.config.set({"array.chunksize": "1MB"})
    with pytest.raises(KeyError, match="'distributed.worker.memory.wobble'"):
        shmdask.config.set({"distributed": {"worker": {"memory": {"wobble": 0.5}}}})
    assert config.get("distributed.scheduler.allowed-failure", "fallback") == "fallback"


def test_bad_values_are_refused_when_set():
    with pytest.raises(ValueError, match="allowed_failures"):
        shmdask.config.set({"distributed.scheduler.allowed-failures": -1})
    with pytest.raises(ValueError, match="not a size"):
        shmdask.config.set({"array.chunk-size": "lots"})
    with pytest.raises(ValueError, match="optimize"):
        shmdask.config.set(optimize="yes")


def test_the_dask_names_exist_in_dask():
    """Each dask name we map is a real dask setting, with the same kind of value."""
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    for option in config.OPTIONS:
        for name in option.dask_names:
            if name == "num-workers":  # dask reads it, but has no default for it
                continue
            value = dask.config.get(name)
            # the value dask ships with is one we accept too
            stored = option.check(value) if option.check else value
            assert stored is not None or option.default is None, name


@pytest.mark.parametrize("allowed", [0, 1])
def test_allowed_failures_is_the_killed_worker_count(allowed):
    with shmdask.config.set({"distributed.scheduler.allowed-failures": allowed}):
        engine = Engine()
    heard = []
    engine.submit({"a": (inc, 1)}, {"a": set()}, ["a"], None,
                  lambda key, status, exc: heard.append((status, exc)))
    deaths = 0
    while not heard:
        worker = FakeWorker(f"w{deaths}")  # it dies below
        engine.add_worker(worker)
        engine.run_until(lambda w=worker: bool(w.batches) or bool(heard), poll=0.01)
        engine.post(("worker-lost", worker.id, "killed by the test"))
        deaths += 1
        engine.run_until(lambda: not engine.state.tasks["a"].state == "processing"
                         if "a" in engine.state.tasks else True, poll=0.01)
    engine.close()
    status, exc = heard[0]
    assert status == "erred" and isinstance(exc, KilledWorker)
    assert deaths == allowed + 1  # as dask: ``allowed`` deaths tolerated, the next fails it
