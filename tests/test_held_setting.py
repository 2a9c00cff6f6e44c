"""HeldSetting: a process-wide setting is ours while held, the user's after."""

from __future__ import annotations

import pytest

from shmdask.scheduler.held_setting import HeldSetting


class Knob:
    """A setting to hold: ours is 1, unless it already reads 1 or less."""

    def __init__(self, value: float):
        self.value = value
        self.writes: list = []

    def write(self, value: float) -> None:
        self.value = value
        self.writes.append(value)

    def setting(self) -> HeldSetting:
        return HeldSetting(lambda: self.value, self.write,
                           lambda current: 1 if current > 1 else None)


def test_the_last_release_puts_back_what_the_first_hold_found():
    knob = Knob(5)
    held = knob.setting()
    held.hold()
    held.hold()
    assert knob.value == 1 and held.users == 2
    held.release()
    assert knob.value == 1
    held.release()
    assert knob.value == 5 and held.users == 0
    held.release()  # one release too many changes nothing
    assert knob.value == 5 and held.users == 0
    assert knob.writes == [1, 5]


def test_a_value_already_as_good_is_left_alone():
    knob = Knob(0.5)
    held = knob.setting()
    with held.held():
        assert knob.value == 0.5
    assert knob.value == 0.5 and knob.writes == []


def test_a_change_made_while_held_wins():
    knob = Knob(5)
    held = knob.setting()
    held.hold()
    knob.value = 3  # the user sets their own
    held.release()
    assert knob.value == 3


def test_held_gives_back_after_an_error():
    knob = Knob(5)
    held = knob.setting()
    with pytest.raises(ValueError), held.held():
        assert knob.value == 1
        raise ValueError("x")
    assert knob.value == 5 and held.users == 0
