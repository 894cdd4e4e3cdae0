"""The closed loop in simulation: individual campaigns against a segment baseline, judged by
the simulator's hidden truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from concierge.cli.main import app


@pytest.mark.slow
def test_individual_campaigns_beat_the_segment_baseline(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["evaluate", "campaigns", "--shoppers", "400", "--days", "120", "--weeks", "4", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    ind, seg = report["individual"], report["segment"]
    assert report["people"] > 100 and ind["messages"] > 0 and seg["messages"] > 0
    assert ind["revenue_per_recipient"] > seg["revenue_per_recipient"]
    assert ind["unsubscribe_rate"] <= seg["unsubscribe_rate"]
    assert report["individual_wins"] is True
