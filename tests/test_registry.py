"""Model artifacts: versions, round trips, pruning and live reload, on both backends."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from concierge import Concierge
from concierge.cli.main import app
from concierge.errors import NotFoundError
from concierge.models.idmap import IdMap
from concierge.models.registry import LiveModels, Registry, config_digest


def _save(reg: Registry, name: str, x: np.ndarray, **kw: object) -> int:
    info = reg.save(
        name,
        {"x": x, "ids": np.array(["a", "bé"])},
        config={"factors": 8, "seed": 42},
        metrics={"recall": 0.5},
        meta={"n": int(x.size)},
        as_of_us=1,
        log_seq=2,
        created_us=3,
    )
    return info.version


def test_versions_count_up_and_round_trip(cg: Concierge) -> None:
    reg = cg.registry
    assert reg.latest("m") is None
    with pytest.raises(NotFoundError):
        reg.load("m")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert _save(reg, "m", x) == 1
    assert _save(reg, "m", x + 1) == 2
    art = reg.load("m")
    assert art.info.version == 2
    np.testing.assert_array_equal(art.arrays["x"], x + 1)
    assert art.arrays["ids"].tolist() == ["a", "bé"]
    assert art.arrays["x"].dtype == np.float32
    assert art.info.metrics == {"recall": 0.5}
    assert art.meta == {"n": 12}
    assert art.info.config_digest == config_digest({"seed": 42, "factors": 8})
    np.testing.assert_array_equal(reg.load("m", 1).arrays["x"], x)
    assert [v["version"] for v in cg.models("m")] == [2, 1]


def test_old_versions_are_pruned(cg: Concierge) -> None:
    reg = Registry(cg.store, keep=2)
    for i in range(4):
        _save(reg, "m", np.array([i]))
    assert [i.version for i in reg.versions("m")] == [4, 3]
    with pytest.raises(NotFoundError):
        reg.load("m", 2)


def test_live_models_swap_in_a_new_version(cg: Concierge) -> None:
    reg = cg.registry
    live = LiveModels(reg, "m", lambda a: float(a.arrays["x"].sum()), check_every_s=0.0)
    assert live.get() is None
    _save(reg, "m", np.array([1.0, 2.0]))
    assert live.get() == 3.0 and live.version == 1
    _save(reg, "m", np.array([5.0]))
    assert live.get() == 5.0 and live.version == 2
    slow = LiveModels(reg, "m", lambda a: float(a.arrays["x"].sum()), check_every_s=3600)
    assert slow.get() == 5.0
    _save(reg, "m", np.array([7.0]))
    assert slow.get() == 5.0  # not checked again yet
    assert slow.refresh() and slow.get() == 7.0


def test_idmap_is_a_bijection() -> None:
    m = IdMap.from_values(np.array(["z", "a", "z", "m", "a"]))
    assert m.external.tolist() == ["z", "a", "m"]
    assert m.to_internal(["m", "q", "z", "a"]).tolist() == [2, -1, 0, 1]
    assert m.to_external(m.to_internal(["a", "m"])).tolist() == ["a", "m"]
    assert "a" in m and "q" not in m and m.index("q") == -1
    assert IdMap.from_values([]).to_internal(["a"]).tolist() == [-1]
    with pytest.raises(ValueError):
        IdMap(np.array(["a", "a"]))


def test_train_and_models_commands(db_url: str) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--db", db_url, "--json"])
    assert res.exit_code == 0, res.output
    assert isinstance(json.loads(res.stdout), list)
    bad = runner.invoke(app, ["train", "--only", "nope", "--db", db_url, "--json"])
    assert bad.exit_code == 2
    assert json.loads(bad.stdout)["detail"][0]["field"] == "only"
    res = runner.invoke(app, ["models", "--db", db_url, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == []
