"""The engine's GC policy: the collector is off inside big steps and always comes
back on; young objects are looked at less often while an engine runs."""

from __future__ import annotations

import gc

import pytest

from shmdask.scheduler.gc_pause import (
    GC_PAUSE_MIN_TASKS,
    SPARSE_COLLECTION,
    SPARSE_YOUNG_THRESHOLD,
    _sparse_thresholds,
    gc_paused,
)


def test_collector_is_off_inside_and_back_on_after_even_after_an_error():
    assert gc.isenabled()
    with gc_paused(GC_PAUSE_MIN_TASKS):
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused(GC_PAUSE_MIN_TASKS):
        raise ValueError("x")
    assert gc.isenabled()


def test_small_steps_and_nested_pauses_leave_the_switch_alone():
    with gc_paused(GC_PAUSE_MIN_TASKS - 1):
        assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner one did not turn it back on
    assert gc.isenabled()


def test_overlapping_pauses_keep_the_collector_off_until_the_last_one_ends():
    # pauses in two threads need not nest: the first to end must not turn
    # the collector on under the other
    first, second = gc_paused(), gc_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_user_stays_off():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_young_objects_are_collected_sparsely_while_an_engine_runs():
    from shmdask.delayed import delayed
    from shmdask.scheduler.engine import Engine

    original = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        seen = delayed(gc.get_threshold)().compute(scheduler="threads")
        assert seen == (SPARSE_YOUNG_THRESHOLD, 10, 10)
        assert gc.get_threshold() == (700, 10, 10)  # back after the compute
        engine = Engine()
        engine.start()
        try:
            assert gc.get_threshold() == (SPARSE_YOUNG_THRESHOLD, 10, 10)
        finally:
            engine.close()
            engine.close()  # a second close gives nothing back twice
        assert gc.get_threshold() == (700, 10, 10) and SPARSE_COLLECTION.users == 0
    finally:
        gc.set_threshold(*original)


def test_a_sparser_threshold_or_no_collection_set_by_the_user_is_kept():
    assert _sparse_thresholds((700, 10, 10)) == (SPARSE_YOUNG_THRESHOLD, 10, 10)
    assert _sparse_thresholds((SPARSE_YOUNG_THRESHOLD * 2, 5, 5)) is None
    assert _sparse_thresholds((0, 10, 10)) is None
