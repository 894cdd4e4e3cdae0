"""``python -m bench [name ...]``: run the benchmarks, print a table, write bench/results.json."""

from __future__ import annotations

import importlib
import sys

from bench.common import Figure, write

BENCHES = [
    "bench_import",
    "bench_rebuild",
    "bench_http_ingest",
    "bench_lifetime",
    "bench_segments",
    "bench_campaigns",
    "bench_recs",
    "bench_dashboard",
]


def main(argv: list[str]) -> int:
    names = argv or BENCHES
    figures: list[Figure] = []
    for name in names:
        mod = importlib.import_module(f"bench.{name}")
        print(f"== {name}", flush=True)
        got: list[Figure] = mod.run()
        for f in got:
            verdict = "" if f.met is None else ("  MET" if f.met else "  NOT MET")
            print(
                f"{f.name:<48} {f.value:>12,.2f} {f.unit:<10} ratio {f.ratio:>8.2f} "
                f"vs {f.reference} ({f.reference_value:,.3f}){verdict}  {f.target}",
                flush=True,
            )
        figures += got
        write(got)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
