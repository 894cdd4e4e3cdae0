"""Local time for simulated shoppers: UTC offsets per time zone, hour by hour, DST included.

Shoppers act at local hours (mornings, lunch breaks, evenings) in their own zone, and their events
carry that local offset in the timestamp, as a shop's JavaScript snippet would send it. Offsets
are looked up in an hourly grid per zone (zones change offset only on the hour), built once with
Polars' time-zone conversion, so converting millions of instants is one array lookup.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from concierge.sim.world import I

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
SECOND_US = 1_000_000


class OffsetGrid:
    """UTC offsets (microseconds) of ``zones`` for every hour of ``[lo_us, hi_us]``, padded."""

    def __init__(self, zones: tuple[str, ...], lo_us: int, hi_us: int) -> None:
        self.zones = zones
        self.lo_us = (lo_us // HOUR_US - 48) * HOUR_US
        n = (hi_us - self.lo_us) // HOUR_US + 96
        hours = pl.Series(
            "utc", self.lo_us + np.arange(n, dtype=np.int64) * HOUR_US, dtype=pl.Int64
        ).cast(pl.Datetime("us", "UTC"))
        self.offsets: I = np.zeros((len(zones), n), dtype=np.int64)
        for z, zone in enumerate(zones):
            local = hours.dt.convert_time_zone(zone).dt.replace_time_zone(None)
            naive = hours.dt.replace_time_zone(None)
            self.offsets[z] = (local.cast(pl.Int64) - naive.cast(pl.Int64)).to_numpy()

    def offset_us(self, zone: I, ts_us: I) -> I:
        """The offset in force at UTC instant ``ts_us[i]`` in zone ``zone[i]``."""
        hour = np.clip((ts_us - self.lo_us) // HOUR_US, 0, self.offsets.shape[1] - 1)
        out: I = self.offsets[zone, hour]
        return out

    def to_utc(self, zone: I, local_us: I) -> I:
        """The UTC instant of a local wall-clock time (given as if it were UTC).

        Two passes settle the offset away from transitions; a wall time that does not exist
        (the skipped hour of spring) maps one hour later, as clocks do.
        """
        first = local_us - self.offset_us(zone, local_us)
        out: I = local_us - self.offset_us(zone, first)
        return out


def iso_local(ts_us: pl.Expr, offset_us: pl.Expr) -> pl.Expr:
    """ISO-8601 text of a UTC instant at a local offset, exactly as pydantic writes it.

    Whole seconds only (the simulator never writes fractions): ``2026-01-05T19:04:11+01:00``,
    and ``Z`` for a zero offset.
    """
    wall = (ts_us + offset_us).cast(pl.Datetime("us")).dt.strftime("%Y-%m-%dT%H:%M:%S")
    minutes = offset_us // 60_000_000
    sign = pl.when(minutes < 0).then(pl.lit("-")).otherwise(pl.lit("+"))
    mag = minutes.abs()
    text = (
        sign
        + (mag // 60).cast(pl.String).str.zfill(2)
        + ":"
        + (mag % 60).cast(pl.String).str.zfill(2)
    )
    return wall + pl.when(minutes == 0).then(pl.lit("Z")).otherwise(text)
