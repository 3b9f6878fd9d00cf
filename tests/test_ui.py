"""The panel pattern, headless: run, demo, bad input shows a message and changes nothing."""
import pytest
from traitlets import Int, TraitError, Unicode

from lfmlab.ui import BadInput, Panel


class Doubler(Panel):
    title = "doubler"
    text = Unicode("ab")
    times = Int(2, min=1, max=5)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0

    def check(self):
        if not self.text:
            raise BadInput("The text is empty: type something.")

    def compute(self):
        self.calls += 1
        if self.text == "crash":
            raise ZeroDivisionError("bug")
        return self.text * self.times


def test_run_and_demo_press_the_real_button():
    p = Doubler()
    assert p.demo(text="xy", times=3) == "xyxyxy"
    assert p.ok and p.result == "xyxyxy" and p.calls == 1 and "done" in p.message


def test_bad_input_shows_message_and_changes_nothing():
    p = Doubler()
    p.demo(text="ok")
    p.text = ""
    p.button.click()
    assert not p.ok and "empty" in p.message and "empty" in p.status.value
    assert p.result == "okok" and p.calls == 1  # compute never ran, the old result stays


def test_out_of_range_value_is_refused():
    p = Doubler()
    with pytest.raises(TraitError):
        p.times = 99
    assert p.times == 2


def test_unexpected_error_is_shown_not_raised():
    p = Doubler()
    assert p.run() == "abab"
    p.text = "crash"
    assert p.run() is None
    assert not p.ok and "ZeroDivisionError" in p.message and p.result == "abab"
    with pytest.raises(RuntimeError, match="demo failed"):
        p.demo()


def test_demo_rejects_unknown_controls():
    with pytest.raises(AttributeError, match="no control"):
        Doubler().demo(colour="red")


def test_controls_are_linked_to_state():
    import ipywidgets as W

    p = Doubler()
    box = p.bind(W.IntSlider(min=1, max=5), "times")
    box.value = 4
    assert p.times == 4
    p.times = 3
    assert box.value == 3
