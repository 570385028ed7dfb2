"""Progress off a terminal: one plain line per interval with the rate and an ETA, no carriage returns."""

import io

from robo_genie.progress import LineProgress, progress_bar


def test_line_progress_prints_lines_with_an_eta_and_no_carriage_returns():
    stream = io.StringIO()
    bar = LineProgress(total=4, desc="dynamics", unit="step", interval_s=0.0, stream=stream)
    for _ in range(3):
        bar.update()
        bar.set_postfix({"loss": "0.03"})
    bar.close()
    bar.close()                                    # closing twice prints once
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0].startswith("[dynamics] 1/4 step (25%)") and "ETA" in lines[0]
    assert lines[-1].startswith("[dynamics] 3/4 step (75%)") and lines[-1].endswith("loss 0.03")
    assert len(lines) == 4                         # one per update (interval 0) and one on close


def test_line_progress_waits_for_its_interval_and_wraps_iterables():
    stream = io.StringIO()
    items = list(LineProgress(range(5), total=5, desc="ingest", unit="ep", interval_s=3600, stream=stream))
    assert items == [0, 1, 2, 3, 4]
    assert stream.getvalue().splitlines() == [stream.getvalue().strip()]    # only the closing line
    assert stream.getvalue().startswith("[ingest] 5/5 ep (100%)") and "ETA" not in stream.getvalue()


def test_progress_bar_is_lines_when_stderr_is_not_a_terminal(capsys):
    assert isinstance(progress_bar(total=3, desc="x", unit="step"), LineProgress)     # pytest captures stderr
