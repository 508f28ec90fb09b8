"""``memguardctl profile``: each domain's memory over a window, as the
memory-debugging tools users know profile a run: current, mean and peak
working set, growth (the least-squares slope), the daemon's leak rate, the
samples themselves, and a plot of each.  The samples come from memguardd's
flight recorder (every sample of the last minutes): ``--past`` profiles
the window that just ended, without it the command waits out the window
first."""

from __future__ import annotations

import math

from ..units import format_bytes
from .render import table

SCHEMA_VERSION = 1


def slope(t: list[float], y: list[float]) -> float | None:
    """Least-squares growth of *y* over *t*, per second; None under two points."""
    n = len(t)
    if n < 2:
        return None
    mt, my = sum(t) / n, sum(y) / n
    var = sum((x - mt) ** 2 for x in t)
    return None if var == 0 else sum((x - mt) * (v - my) for x, v in zip(t, y)) / var


def summarise(history: dict, duration: float) -> dict:
    """The profile document from the daemon's ``history`` answer."""
    domains = {}
    for name, h in sorted(history.items()):
        ws = h["working_set_bytes"]
        limits = [x for x in h["limit_bytes"] if x is not None]
        domains[name] = {
            "kind": h["kind"], "samples_count": len(ws),
            "current_bytes": ws[-1] if ws else None,
            "mean_bytes": round(sum(ws) / len(ws)) if ws else None,
            "peak_bytes": max(ws) if ws else None,
            "limit_bytes": limits[-1] if limits else None,
            "peak_ratio": round(max(ws) / limits[-1], 4) if ws and limits else None,
            "growth_bytes_per_second": None if (g := slope(h["t"], ws)) is None else round(g, 1),
            "leak_rate_bytes_per_second": h.get("leak_rate"),
            "samples": {k: h[k] for k in ("t", "used_bytes", "working_set_bytes", "limit_bytes")},
        }
    return {"schema_version": SCHEMA_VERSION, "duration_seconds": duration, "domains": domains}


def render(profile: dict) -> str:
    rows = []
    for name, d in profile["domains"].items():
        growth = d["growth_bytes_per_second"]
        leak = d["leak_rate_bytes_per_second"]
        rows.append([name, d["kind"], str(d["samples_count"]), format_bytes(d["current_bytes"]),
                     format_bytes(d["mean_bytes"]), format_bytes(d["peak_bytes"]), format_bytes(d["limit_bytes"]),
                     "-" if d["peak_ratio"] is None else f"{100 * d['peak_ratio']:.1f}%",
                     "-" if growth is None else f"{'+' if growth >= 0 else '-'}{format_bytes(abs(growth) * 60)}/min",
                     "-" if not leak else f"{format_bytes(leak * 60)}/min"])
    if not rows:
        return "no domain had samples in the window\n"
    out = [f"profile of the last {profile['duration_seconds']:g} s"]
    out += table(["DOMAIN", "KIND", "SAMPLES", "CURRENT", "MEAN", "PEAK", "LIMIT", "PEAK%", "GROWTH", "LEAK"],
                 rows, {2, 3, 4, 5, 6, 7, 8, 9})
    return "\n".join(out) + "\n"


def plot(profile: dict, path: str) -> None:
    """One panel per domain: used and working set against the limit.
    Raises ImportError without matplotlib (pip install 'memguard[plot]')."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(profile["domains"].items()) or [("(none)", None)]
    fig, axes = plt.subplots(len(domains), 1, figsize=(9, 2.6 * len(domains)), dpi=100, squeeze=False)
    mib = 2**20
    for ax, (name, d) in zip(axes[:, 0], domains):
        if d is not None:
            s = d["samples"]
            ax.plot(s["t"], [u / mib for u in s["used_bytes"]], label="used", color="tab:blue")
            ax.plot(s["t"], [w / mib for w in s["working_set_bytes"]], label="working set", color="tab:orange")
            limits = [(x, lim / mib) for x, lim in zip(s["t"], s["limit_bytes"]) if lim is not None]
            if limits and not math.isinf(limits[-1][1]):
                ax.plot([x for x, _ in limits], [y for _, y in limits], label="limit", color="tab:red",
                        linestyle="--")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("MiB")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seconds before now")
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
