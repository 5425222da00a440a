"""The words and fill of a running job's bar (ui/jobs.py)."""
from ui.format import progress_text


def test_a_running_bar_is_never_full_and_says_the_time_left():
    frac, text = progress_text("Evaluating", 35, 35, 60.0)
    assert frac < 1.0  # the last unit's result is still being put together
    frac, text = progress_text("Evaluating", 10, 40, 20.0)
    assert frac == 0.25 and "10/40" in text and "about 60 s left" in text
    _, text = progress_text("Evaluating", 1, 40, 30.0)
    assert "about 20 min left" in text
    frac, text = progress_text("Evaluating", 0, 0, 1.0)
    assert frac == 0.0 and "left" not in text  # nothing done yet: no estimate
