"""Progress of long local work: a line per 10% where no terminal shows a bar (logs, CI, Ray jobs)."""

from __future__ import annotations

import io

from ganflow.present.progress import Progress


def test_off_a_terminal_progress_is_a_line_per_ten_percent_ending_at_the_total():
    out = io.StringIO()
    with Progress(200, "synth", "images", stream=out) as progress:
        for _ in range(40):
            progress.update(5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0] == "[ganflow] synth: 20/200 images (10%)" and lines[-1] == "[ganflow] synth: 200/200 images (100%)"


def test_uneven_steps_still_end_with_the_whole_count():
    out = io.StringIO()
    with Progress(7, "score (recon)", "images", stream=out) as progress:
        for n in (3, 3, 1):
            progress.update(n)
    assert out.getvalue().splitlines()[-1] == "[ganflow] score (recon): 7/7 images (100%)"
