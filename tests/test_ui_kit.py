"""The notebook kit: tables, timing, the paired verdict, the source of a function."""
import time

import pytest

from lfmlab.ui import kit


def test_markdown_table_has_a_header_a_rule_and_one_row_per_row():
    text = kit.markdown_table([["LoRA", 0.5], ["BitFit", 0.25]], ["method", "accuracy"])
    assert text.splitlines() == ["| method | accuracy |", "|---|---|", "| LoRA | 0.5 |", "| BitFit | 0.25 |"]


def test_timed_warms_up_then_averages_the_calls():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)
        return len(calls)

    out, seconds = kit.timed(fn, repeats=3)
    assert out == 4 and len(calls) == 4          # one warm-up, three timed calls
    assert 0.009 <= seconds < 0.2


@pytest.mark.parametrize("a,b,word", [([0.9, 0.91, 0.92], [0.5, 0.52, 0.49], "holds"),
                                      ([0.5, 0.52, 0.49], [0.9, 0.91, 0.92], "reversed"),
                                      ([0.5, 0.6, 0.4], [0.5, 0.4, 0.6], "tie"),
                                      ([0.6], [0.5], "no noise estimate")])
def test_paired_verdict_needs_two_standard_errors(a, b, word):
    _, verdict = kit.paired_verdict(a, b)
    assert word in verdict


def test_show_source_displays_the_function(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    kit.show_source(kit.markdown_table)
    assert len(shown) == 1 and "def markdown_table(rows" in shown[0].data
    assert shown[0].data.startswith("`lfmlab.ui.kit.markdown_table`")


def test_figure_state_follows_every_update_so_a_late_view_draws_it():
    """plotly keeps the state a new view starts from as it was at creation; the helpers keep it
    current (Voila opens its views after the cells ran: without this its charts stayed empty)."""
    import json

    import numpy as np
    import torch

    from lfmlab.ui import plots
    from lfmlab.ui.distillation import _gaps_as_none, class_grid

    line = plots.line_widget(["a", "b"], "t")
    plots.set_line(line, 1, [0, 1, 2], [3.0, 2.0, 1.0])
    assert list(line._widget_data[1]["y"]) == [3.0, 2.0, 1.0] and len(line._widget_data[0]["x"]) == 0
    bars = plots.bar_widget()
    plots.set_bars(bars, ["x", " y"], [0.6, 0.4], title="new")
    assert list(bars._widget_data[0]["x"]) == [0.6, 0.4] and bars._widget_layout["title"]["text"] == "new"
    with plots.updating(line):
        line.layout.title = "changed"
    assert line._widget_layout["title"]["text"] == "changed"
    grid = class_grid(torch.rand(3, 1, 8, 8), torch.tensor([0, 0, 4]))
    assert np.isnan(grid).any()                                    # the gaps between images
    json.dumps(_gaps_as_none(grid), allow_nan=False)              # ... are JSON nulls for the widget
