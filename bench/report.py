"""``python -m bench.report``: the README's Performance table, from bench/results.json."""

from __future__ import annotations

import json

from bench.common import RESULTS


def table() -> str:
    data = json.loads(RESULTS.read_text())
    m = data["machine"]
    lines = [
        f"Measured {data['updated']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']} (`make bench`; every figure in `bench/results.json`).",
        "",
        "| figure | value | target | reference (same run) | ratio | met |",
        "|---|---:|---|---|---:|---|",
    ]
    for name, f in sorted(data["figures"].items()):
        met = "" if f["met"] is None else ("yes" if f["met"] else "**no**")
        lines.append(
            f"| `{name}` | {f['value']:,.1f} {f['unit']} | {f['target']} | "
            f"{f['reference']}: {f['reference_value']:,.3f} | {f['ratio']:,.2f} | {met} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
