"""gc_paused: the collector is off inside big steps and always comes back on."""

from __future__ import annotations

import gc

import pytest

from shmdask.scheduler.gc_pause import GC_PAUSE_MIN_TASKS, gc_paused


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


def test_a_collector_turned_off_by_the_user_stays_off():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
