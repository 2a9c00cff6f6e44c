"""Lock, Semaphore, Event, Variable, Queue, Pub/Sub: from the client and from tasks."""

from __future__ import annotations

import threading
import time

import pytest

from shmdask.client import Client, Future
from shmdask.cluster.local_cluster import LocalCluster
from shmdask.distributed import Event, Lock, Pub, Queue, Semaphore, Sub, Variable


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2) as cluster, Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def default(client):
    import shmdask

    with shmdask.config.set(scheduler=client):
        yield client


def locked_append(lock: Lock, v: Variable, x: int) -> int:
    with lock:
        v.set(v.get() + [x])  # a read-modify-write that only a lock keeps whole
    return x


def test_lock_from_tasks_serializes_updates(default):
    lock = Lock("append")
    v = Variable("items")
    v.set([])
    futures = default.map(locked_append, [lock] * 8, [v] * 8, range(8))
    assert sorted(default.gather(futures)) == list(range(8))
    assert sorted(v.get()) == list(range(8))
    assert not lock.locked()


def test_lock_semantics(client):
    a, b = Lock("L", client=client), Lock("L", client=client)
    assert a.acquire()
    assert a.locked() and b.locked()
    assert not b.acquire(timeout=0.1)
    assert not b.acquire(blocking=False)
    with pytest.raises(RuntimeError, match="not held"):
        b.release()
    done = []
    t = threading.Thread(target=lambda: done.append(b.acquire(timeout=10)))
    t.start()
    time.sleep(0.1)
    a.release()
    t.join(10)
    assert done == [True]
    b.release()
    assert not a.locked()


def test_semaphore_limits_holders(client):
    sem = Semaphore(max_leases=2, name="sem", client=client)
    assert sem.acquire() and sem.acquire()
    assert sem.get_value() == 2
    assert not sem.acquire(timeout=0.1)
    sem.release()
    assert sem.acquire(timeout=1)
    sem.release()
    sem.release()
    assert sem.get_value() == 0
    with pytest.raises(RuntimeError, match="released more often"):
        sem.release()


def wait_for_event(name: str) -> bool:
    return Event(name).wait(timeout=30)


def test_event_wakes_a_waiting_task(default):
    ev = Event("go")
    assert not ev.is_set()
    future = default.submit(wait_for_event, "go", pure=False)
    time.sleep(0.3)
    assert not future.done()
    ev.set()
    assert future.result(timeout=30) is True
    ev.clear()
    assert not ev.wait(timeout=0.05)


def test_variable_holds_values_and_futures(default):
    v = Variable("x")
    with pytest.raises(TimeoutError):
        v.get(timeout=0.05)
    v.set({"a": 1})
    assert v.get() == {"a": 1}
    future = default.submit(lambda: 42)
    v.set(future)
    del future
    got = v.get()
    assert isinstance(got, Future) and got.result() == 42
    v.delete()
    with pytest.raises(TimeoutError):
        v.get(timeout=0.05)


def produce(q: Queue, n: int) -> int:
    for i in range(n):
        q.put(i)
    return n


def test_queue_between_tasks_and_client(default):
    q = Queue("jobs", maxsize=0)
    assert default.submit(produce, q, 5).result(timeout=30) == 5
    assert q.qsize() == 5
    assert [q.get(timeout=5) for _ in range(2)] == [0, 1]
    assert q.get(batch=2) == [2, 3]
    assert q.get(batch=True) == [4]
    with pytest.raises(TimeoutError):
        q.get(timeout=0.05)
    bounded = Queue("bounded", maxsize=1)
    bounded.put("a")
    with pytest.raises(TimeoutError):
        bounded.put("b", timeout=0.05)


def test_queue_passes_futures(default):
    q = Queue()
    q.put(default.submit(lambda: "payload"))
    got = q.get(timeout=5)
    assert isinstance(got, Future) and got.result(timeout=30) == "payload"


def publish(name: str, n: int) -> None:
    pub = Pub(name)
    for i in range(n):
        pub.put(i)


def test_pub_sub(default):
    sub = Sub("news")
    assert Pub("news").subscribers == 1
    default.submit(publish, "news", 3).result(timeout=30)
    assert [sub.get(timeout=5) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(TimeoutError):
        sub.get(timeout=0.05)
    sub.close()
    assert Pub("news").subscribers == 0


def test_bad_arguments(client):
    with pytest.raises(ValueError, match="max_leases"):
        Semaphore(0, client=client)
    with pytest.raises(ValueError, match="timeout"):
        Lock(client=client).acquire(timeout=-1)
    with pytest.raises(TypeError, match="name"):
        Variable(3, client=client)


@pytest.mark.slow
def test_semantics_side_by_side_with_dask_distributed(client):
    """The same sequence of calls gives the same answers on dask.distributed."""
    distributed = pytest.importorskip("distributed")

    def script(mod, c):
        out = []
        # (dask's Lock and Semaphore take no client: they use the default one)
        lock = mod.Lock("k")
        out += [lock.acquire(), lock.locked(), mod.Lock("k").acquire(timeout=0.1)]
        lock.release()
        q = mod.Queue("q", client=c)
        q.put(1)
        q.put(2)
        out += [q.qsize(), q.get(), q.get(batch=True)]
        v = mod.Variable("v", client=c)
        v.set("x")
        out.append(v.get())
        ev = mod.Event("e", client=c)
        out += [ev.is_set(), ev.wait(0.05)]
        ev.set()
        out += [ev.is_set(), ev.wait(0.05)]
        sem = mod.Semaphore(2, name="s")
        out += [sem.acquire(), sem.acquire(), sem.acquire(timeout=0.1)]
        return out

    with distributed.Client(processes=False, n_workers=1, dashboard_address=":0") as dc:
        expected = script(distributed, dc)
    import shmdask
    import shmdask.distributed as ours

    with shmdask.config.set(scheduler=client):
        assert script(ours, client) == expected
