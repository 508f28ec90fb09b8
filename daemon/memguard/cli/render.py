"""Human tables for memguardctl, built from the documented JSON documents."""

from __future__ import annotations

from ..units import format_bytes


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}d{h:02d}h" if d else f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(headers)] + [line(r) for r in rows]


def _psi(domain: dict) -> str:
    psi = domain.get("psi")
    if not psi:
        return "-"
    full = psi.get("full")
    return f"{psi['some']['avg10']:.2f}/{full['avg10']:.2f}" if full else f"{psi['some']['avg10']:.2f}/-"


def _tto(domain: dict) -> str:
    p = domain.get("prediction") or {}
    if p.get("tto_seconds") is None:
        return "-"
    return f"{_duration(p['tto_seconds'])} ({p['confidence']:.0%})"


def one_line(text: str) -> str:
    """A process's own text kept to one row that cannot drive the terminal:
    runs of white space (a command line may hold newlines) become one
    space, and every other control character (an escape sequence in a
    process's name or a cgroup's) is shown as its \\x code."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in " ".join(text.split()))


def _per_minute(bytes_per_minute: float | None) -> str:
    if not bytes_per_minute:
        return "-"
    return ("+" if bytes_per_minute > 0 else "") + format_bytes(bytes_per_minute) + "/min"


def _rules(rules: dict, firing: list[list[str]]) -> list[str]:
    files = ", ".join(rules.get("files") or []) or "no rule files"
    out = [f"{rules.get('count', 0)} rule(s) in force from {files}"]
    if rules.get("error"):
        out.append(f"the last reload FAILED and changed nothing: {rules['error']}")
    if firing:
        out += table(["RULE", "DOMAIN", "SEVERITY", "FIRING FOR"], firing, {3})
    else:
        out.append("no rule firing")
    return out


def render_status(status: dict, socket: str | None = None) -> str:
    """The status document as tables; *socket*: the one that answered."""
    health = "healthy" if status["healthy"] else "DEGRADED: " + "; ".join(status["degraded"])
    out = [f"memguardd {status['version']}, up {_duration(status['uptime_seconds'])}, "
           f"sampling every {status['interval_seconds']:g}s, {health}"]
    metrics = (status.get("metrics") or {}).get("url")
    out.append(f"socket {socket or '-'}; metrics {metrics or 'off'}")
    out.append("")
    src_rows = [[s["name"], s["state"], s["reason"] or ""] for s in status["sources"]]
    out += table(["SOURCE", "STATE", "REASON"], src_rows, set()) + [""]
    rows = []
    for d in status["domains"]:
        ratio, swap, p = d["usage_ratio"], d["swap_used_bytes"], d.get("prediction") or {}
        rows.append([d["name"], d["kind"], format_bytes(d["used_bytes"]),
                     format_bytes(d["working_set_bytes"]), format_bytes(d["limit_bytes"]),
                     "-" if ratio is None else f"{100 * ratio:.1f}%",
                     format_bytes(swap) if swap is not None else "-", _psi(d), _tto(d),
                     _per_minute(60 * (p.get("rate_bytes_per_second") or 0)),
                     _per_minute(p.get("leak_bytes_per_minute")), d.get("risk", "-")])
    out += table(["DOMAIN", "KIND", "USED", "WORKING SET", "LIMIT", "USE%", "SWAP", "PSI SOME/FULL",
                  "TIME TO OOM", "GROWTH", "LEAK", "RISK"], rows, {2, 3, 4, 5, 6, 7, 8, 9, 10})
    firing = [[f["rule"], f["domain"] + (f" (job {f['job']})" if f.get("job") else ""), f["severity"],
               _duration(f["since_seconds"])]
              for f in status["rules"]["firing"]]
    out += [""] + _rules(status["rules"], firing)
    if status["processes"]:
        out.append("")
        prows = [[str(p["pid"]), one_line(p["comm"]), format_bytes(p["rss_bytes"]), p["domain"] or "-",
                  one_line(p["cmdline"] or "")[:60]] for p in status["processes"]]
        out += table(["PID", "COMM", "RSS", "DOMAIN", "COMMAND"], prows, {0, 2})
    wsl = status["facts"].get("wsl")
    if wsl:
        out += ["", f"WSL2 kernel {wsl.get('kernel')}: .wslconfig {wsl.get('wslconfig')}"
                + ("" if wsl.get("wslconfig_matches") in (None, True)
                   else " DOES NOT MATCH the VM's memory (restart WSL with `wsl --shutdown`)")]
    return "\n".join(out) + "\n"


def render_jobs(result: dict) -> str:
    """``memguardctl jobs``: one row per registered job."""
    rows = []
    for j in result["jobs"]:
        reg = j["registration"]
        wants = ", ".join(f"{k}={reg[k]}" for k in ("warning", "critical") if reg.get(k)) or "-"
        last = j.get("last_action")
        told = "-" if not last else f"{last['kind']} {last['result']} {_duration(last['seconds_ago'])} ago"
        growth = j.get("growth_bytes_per_second")
        procs = str(len(j["pids"])) + (f" ({len(j['frozen'])} frozen)" if j.get("frozen") else "")
        rows.append([j["id"], str(j["leader"]), procs, str(j["uid"]), j["domain"] or "-",
                     format_bytes(j["rss_bytes"]), _per_minute(None if growth is None else 60 * growth),
                     _tto({"prediction": j.get("prediction")}),
                     wants + (" +hook" if reg.get("hook") else ""), told, _duration(j["registered_seconds"])])
    out = table(["JOB", "LEADER", "PROCS", "UID", "DOMAIN", "RSS", "GROWTH", "TIME TO OOM", "WANTS", "LAST ACTION",
                 "FOR"], rows, {1, 2, 3, 5, 6, 7})
    if not rows:
        out = ["no registered jobs (start one with: memguardctl run -- COMMAND, or MEMGUARD_JOB=NAME COMMAND)"]
    for r in result.get("rejected") or ():
        out.append(f"refused: pid {r['pid']}: {r['error']}")
    return "\n".join(out) + "\n"
