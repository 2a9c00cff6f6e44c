"""``shmdask.config``: options set globally or inside a ``with`` block."""

from __future__ import annotations

import threading

import pytest
from conftest import wait_for

import shmdask
from shmdask import config
from shmdask.delayed import delayed


def test_defaults():
    assert config.get("scheduler") is None
    assert config.get("optimize") is True
    assert config.get("no-such-option", "fallback") == "fallback"


def test_set_as_context_manager_restores():
    with config.set(scheduler="sync", num_workers=3):
        assert config.get("scheduler") == "sync"
        assert config.get("num_workers") == 3
        with config.set({"scheduler": "threads"}):
            assert config.get("scheduler") == "threads"
        assert config.get("scheduler") == "sync"
    assert config.get("scheduler") is None
    assert config.get("num_workers") is None


def test_set_globally_and_refresh():
    config.set(scheduler="sync")
    assert config.get("scheduler") == "sync"
    config.refresh()
    assert config.get("scheduler") is None


def test_context_manager_restores_after_an_exception():
    with pytest.raises(RuntimeError), config.set(scheduler="sync"):
        raise RuntimeError
    assert config.get("scheduler") is None


def test_unknown_option_is_an_error_naming_it():
    with pytest.raises(KeyError, match="schedular"):
        config.set(schedular="sync")
    assert "schedular" not in config.config


def test_conftest_refresh_undoes_global_settings_of_previous_tests():
    # pairs with test_set_globally_leaks_into_nothing below (any order)
    config.set(scheduler="sync", num_workers=1)


def test_set_globally_leaks_into_nothing():
    assert config.get("scheduler") is None and config.get("num_workers") is None


# -- choosing the scheduler ---------------------------------------------------------


def _thread_name():
    return threading.current_thread().name


def where_it_runs(**kwargs):
    return delayed(_thread_name)().compute(**kwargs)


def test_default_scheduler_is_threads():
    assert where_it_runs().startswith("shmdask-thread-")


def test_sync_runs_in_the_calling_thread():
    assert where_it_runs(scheduler="sync") == threading.current_thread().name
    box = []
    t = threading.Thread(target=lambda: box.append(where_it_runs(scheduler="sync")),
                         name="my-caller")
    t.start()
    t.join(30)
    assert box == ["my-caller"]


def test_config_chooses_scheduler_globally_and_in_a_block():
    with config.set(scheduler="sync"):
        assert where_it_runs() == threading.current_thread().name
    assert where_it_runs().startswith("shmdask-thread-")
    config.set(scheduler="sync")
    assert where_it_runs() == threading.current_thread().name


def test_scheduler_argument_wins_over_config():
    with config.set(scheduler="sync"):
        assert where_it_runs(scheduler="threads").startswith("shmdask-thread-")
        assert shmdask.compute(delayed(_thread_name)(),
                               scheduler="threads")[0].startswith("shmdask-thread-")
        assert shmdask.get({"x": (_thread_name,)}, "x",
                           scheduler="threads").startswith("shmdask-thread-")
    with config.set(scheduler="threads"):
        assert where_it_runs(scheduler="sync") == threading.current_thread().name


def _worker_threads():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("shmdask-thread-"))


def test_num_workers_sets_the_thread_count():
    # A thread of an earlier test still finishing a task blocked in C would count too.
    wait_for(lambda: not _worker_threads(), timeout=10, what="earlier worker threads to end")
    with config.set(num_workers=3):
        assert delayed(_worker_threads)().compute() == [f"shmdask-thread-{i}" for i in range(3)]
    assert len(delayed(_worker_threads)().compute(scheduler="threads")) >= 1
    with config.set(num_workers=1):
        assert delayed(_worker_threads)().compute() == ["shmdask-thread-0"]


def test_bad_scheduler_names_the_problem():
    with pytest.raises(ValueError, match="bogus"):
        where_it_runs(scheduler="bogus")
    with pytest.raises(TypeError, match="int"):
        where_it_runs(scheduler=42)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", True])
def test_bad_num_workers_is_refused_at_once(bad):
    with pytest.raises(ValueError, match="num_workers"):
        config.set(num_workers=bad)
    assert config.get("num_workers") is None  # nothing was changed
