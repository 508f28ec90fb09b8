"""memguardctl: the command-line client of memguardd.

Exit codes (stable; docs/cli.md):
  0  healthy / done
  1  error (a usage error exits 2, as argparse does)
  3  the daemon cannot be reached
  4  the daemon runs degraded: a source failed (status)
  5  the daemon refused or failed the request (an unknown incident id, ...)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ..incidents.explain import explain
from ..jobs.spec import ENV, JobSpec, JobSpecError, format_job, parse_job, parse_signal
from ..replay import load_trace, replay
from ..rules.load import RuleError, load_rules
from ..units import format_bytes
from . import client, notify, profile, top
from .incident import plot, render_explained, render_incident, render_list
from .render import render_jobs, render_status
from .watch import render_event

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_DEGRADED, EXIT_REFUSED = 0, 1, 2, 3, 4, 5


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes, before or after its name
    (``memguardctl --json status`` and ``memguardctl status --json``).  Below
    the top they default to SUPPRESS, so they never undo the top's value."""
    d = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--socket", default=d(None),
                        help="control socket (default: this user's daemon, else the system's)")
    parser.add_argument("--json", action="store_true", default=d(False),
                        help="print the JSON document instead of a table")
    parser.add_argument("--timeout", type=float, default=d(5.0), help="seconds to wait for an answer")


def parser() -> argparse.ArgumentParser:
    """The command line (also what man pages and shell completion are
    generated from: cli/docgen.py)."""
    p = argparse.ArgumentParser(prog="memguardctl", description="Ask memguardd what it sees.")
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", required=True)

    def command(parent, name: str, **kw) -> argparse.ArgumentParser:
        c = parent.add_parser(name, **kw)
        _common(c, top=False)
        return c
    command(sub, "status", help="domains, sources and top consumers; exit 4 when degraded")
    command(sub, "version", help="the daemon's version and protocol")
    command(sub, "incidents", help="the incidents stored, newest first")
    command(sub, "jobs", help="the registered jobs: processes, domain, memory")
    command(sub, "watch", help="follow warnings, actions and incidents as they happen (those you may see)")
    na = command(sub, "notify-agent", help="show warnings, kills and incidents as desktop notifications "
                                           "(and Windows toasts in WSL2); run it in your session")
    na.add_argument("--repeat", type=float, default=60.0, metavar="SECONDS",
                    help="the same warning at most this often (default 60)")
    na.add_argument("--recent", type=float, default=600.0, metavar="SECONDS",
                    help="at start, also tell of incidents this recent (default 600)")
    top = command(sub, "top", help="a live full-screen view: domains by time to OOM, jobs, rules, incidents")
    top.add_argument("--once", action="store_true", help="print one frame (80 columns) and exit")
    top.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="refresh every (default 1)")
    top.add_argument("--sort", choices=("tto", "use", "growth", "name"), default="tto", help="the first sort")
    run = command(sub, "run", help="run a command as a registered job (sets MEMGUARD_JOB, then execs it)")
    run.add_argument("--name", help="the job's name (default: the command's)")
    run.add_argument("--on-warning", metavar="SIGNAL", help="signal the job when a rule warns (USR1, ...)")
    run.add_argument("--on-critical", metavar="SIGNAL", help="signal the job at critical (TERM, ...)")
    run.add_argument("--target", choices=("leader", "all", "largest"), default="leader",
                     help="signal the first process (default), all of the job's, or the largest")
    run.add_argument("--hook", metavar="COMMAND", help="a command to run (as you) when a rule warns")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    reg = command(sub, "register", help="register a running process (yours) as a job")
    reg.add_argument("--pid", type=int, required=True)
    reg.add_argument("--name", required=True, help="the job's name")
    reg.add_argument("--on-warning", metavar="SIGNAL")
    reg.add_argument("--on-critical", metavar="SIGNAL")
    reg.add_argument("--target", choices=("leader", "all", "largest"), default="leader")
    reg.add_argument("--hook", metavar="COMMAND")
    unreg = command(sub, "unregister", help="forget a job (yours)")
    unreg.add_argument("job", help="the job's id (memguardctl jobs)")
    command(sub, "reload", help="load the rule files again (the last good rules stay on error)")
    ex = command(sub, "explain", help="incident reports from a pasted kernel log (dmesg, journalctl, syslog)")
    ex.add_argument("file", nargs="?", default="-", metavar="FILE", help="the text (default: standard input)")
    rules = command(sub, "rules", help="rule files")
    rules_sub = rules.add_subparsers(dest="action", required=True)
    check = command(rules_sub, "check", help="validate rule files; exit 1 on any error")
    check.add_argument("files", nargs="+", metavar="FILE")
    test = command(rules_sub, "test", help="replay a recorded trace: when each rule fires and clears")
    test.add_argument("files", nargs="+", metavar="FILE")
    test.add_argument("--trace", required=True, help="a trace recorded by bench/record.py (NAME.json)")
    prof = command(sub, "profile", help="each domain's memory over a window: current, mean, peak, growth, leak")
    prof.add_argument("--duration", type=float, default=60.0, metavar="SECONDS",
                      help="the window (default 60, at most the recorder's fine window, 10 min)")
    prof.add_argument("--past", action="store_true", help="profile the window that just ended, without waiting")
    prof.add_argument("--domain", action="append", metavar="DOMAIN", help="only this domain (repeatable)")
    prof.add_argument("--output", metavar="FILE.json", help="write the profile with every sample")
    prof.add_argument("--plot", metavar="FILE.png", help="draw each domain over the window (matplotlib)")
    inc = command(sub, "incident", help="one incident")
    inc_sub = inc.add_subparsers(dest="action", required=True)
    show = command(inc_sub, "show", help="what was killed, why, how fast memory grew, who else used it")
    show.add_argument("id")
    show.add_argument("--plot", metavar="FILE.png", help="also draw the domain's memory before the kill")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parser().parse_args(argv)


def explain_text(path: str, as_json: bool) -> int:
    """Incident reports from a pasted log; no daemon needed.  Exit 0 when
    the text held an OOM report, 1 when it held none (or cannot be read)."""
    try:
        if path == "-":
            text = sys.stdin.buffer.read().decode("utf-8", "replace")
        else:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
    except OSError as e:
        print(f"memguardctl: explain: {path}: {e.strerror}", file=sys.stderr)
        return EXIT_ERROR
    result = explain(text)
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_explained(result))
    return EXIT_OK if result["incidents"] else EXIT_ERROR


def registration(args: argparse.Namespace, name: str) -> str:
    """The MEMGUARD_JOB value the options say; raises JobSpecError."""
    spec = JobSpec(name, parse_signal(args.on_warning, "--on-warning") if args.on_warning else None,
                   parse_signal(args.on_critical, "--on-critical") if args.on_critical else None,
                   args.target, args.hook)
    value = format_job(spec)
    parse_job(value)    # the name must be one the daemon accepts
    return value


def run_job(args: argparse.Namespace) -> int:
    """Exec the command with MEMGUARD_JOB set: the daemon finds it at its
    exec, and everything it starts inherits the registration.  Needs no
    daemon to run (one started later finds the job by its /proc scan)."""
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("memguardctl: run: no command given (memguardctl run [OPTIONS] -- COMMAND ...)", file=sys.stderr)
        return EXIT_USAGE
    try:
        value = registration(args, args.name or os.path.basename(argv[0]))
    except JobSpecError as e:
        print(f"memguardctl: run: {e}", file=sys.stderr)
        return EXIT_USAGE
    env = {**os.environ, ENV: value}
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        print(f"memguardctl: run: {argv[0]}: {e.strerror}", file=sys.stderr)
        return 127 if isinstance(e, FileNotFoundError) else 126


def sockets(explicit: str | None) -> list[str]:
    """The sockets to try, in order: the one given; else this user's
    daemon's, then (for a user who is not root) the system daemon's, as
    systemctl and journalctl users expect."""
    if explicit:
        return [explicit]
    return client.default_sockets()


def ask(paths: list[str], method: str, params: dict, timeout: float) -> tuple[str, object]:
    """(the socket that answered, the result).  A socket where no daemon
    listens passes to the next; raises Unreachable (naming every socket
    tried) or RemoteError."""
    tried = []
    for path in paths:
        try:
            return path, client.call(path, method, params, timeout=timeout)
        except client.Unreachable as e:
            if not e.absent:
                raise   # a daemon is there but refused us or did not answer: say so
            tried.append(path)
    raise client.Unreachable(f"memguardd is not running (no answer on {' nor on '.join(tried)})", absent=True)


def rules_check(files: list[str], as_json: bool) -> int:
    """Validate rule files locally (no daemon needed)."""
    results, failed = [], False
    for path in files:
        try:
            rules = load_rules([path])
            results.append({"file": path, "ok": True, "rules": [r.name for r in rules], "error": None})
        except RuleError as e:
            failed = True
            results.append({"file": path, "ok": False, "rules": [],
                            "error": {"line": e.line, "field": e.field, "message": e.message, "text": str(e)}})
        except OSError as e:
            failed = True
            results.append({"file": path, "ok": False, "rules": [],
                            "error": {"line": None, "field": None, "message": str(e), "text": f"{path}: {e.strerror}"}})
    if as_json:
        json.dump({"schema_version": 1, "ok": not failed, "files": results}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for r in results:
            if r["ok"]:
                print(f"{r['file']}: {len(r['rules'])} rule(s) OK ({', '.join(r['rules'])})")
            else:
                print(r["error"]["text"], file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


def rules_test(files: list[str], trace_path: str, as_json: bool) -> int:
    """Replay a trace through the rules, like promtool's rule tests."""
    try:
        rules = load_rules(files)
        trace = load_trace(trace_path)
    except (RuleError, OSError, ValueError, KeyError) as e:
        print(f"memguardctl: {e}", file=sys.stderr)
        return EXIT_ERROR
    result = replay(trace, rules)
    events = [{"t": round(t, 2), "rule": rule, "kind": kind, "severity": sev}
              for t, rule, kind, sev in result.transitions]
    kill = trace.kills[0] if trace.kills else None
    if as_json:
        json.dump({"schema_version": 1, "trace": trace.name, "killed_at": kill, "transitions": events},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    print(f"trace {trace.name}: limit {format_bytes(trace.limit)}, "
          + (f"OOM-killed at {kill:.1f} s" if kill is not None else f"not killed ({trace.t[-1]:.1f} s)"))
    for e in events:
        before = f"  ({kill - e['t']:.1f} s before the kill)" if kill is not None else ""
        print(f"  {e['t']:8.2f} s  {e['rule']}: {e['kind']}" + (f" {e['severity']}" if e["severity"] else "") + before)
    if not events:
        print("  no rule fired")
    return EXIT_OK


def said(command: str, talk):
    """What *talk* (a conversation with the daemon) returns, or the exit
    code after saying why the daemon did not answer or refused."""
    try:
        return talk()
    except client.Unreachable as e:
        print(f"memguardctl: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except client.RemoteError as e:
        print(f"memguardctl: {command}: {e.message} ({e.code})", file=sys.stderr)
        return EXIT_REFUSED


def ask_daemon(args: argparse.Namespace, method: str, params: dict) -> tuple[str, dict] | int:
    """(the socket that answered, the result), or the exit code after
    saying why there is none."""
    return said(args.command, lambda: ask(sockets(args.socket), method, params, args.timeout))


def top_view(args: argparse.Namespace) -> int:
    """memguardctl top: --once prints one frame; otherwise the live view
    until q (cli/top.py)."""
    if args.interval < 0.1:
        print("memguardctl: top: --interval must be at least 0.1 seconds", file=sys.stderr)
        return EXIT_USAGE
    paths = sockets(args.socket)

    def fetch(method: str, params: dict | None = None):
        return ask(paths, method, params or {}, args.timeout)[1]

    def view() -> int:
        status = fetch("status")
        incidents = fetch("incidents")["incidents"][:5]
        if args.once:
            print("\n".join(top.frame(status, incidents, top.View(sort=args.sort), 80, 1000)))
            return EXIT_OK
        if not sys.stdout.isatty():
            print("memguardctl: top: not a terminal (use --once to print one frame)", file=sys.stderr)
            return EXIT_USAGE
        return top.run(lambda: fetch("status"), lambda: fetch("incidents")["incidents"],
                       lambda incident: render_incident(fetch("incident", {"id": incident})),
                       args.interval, args.sort)
    return said("top", view)


def watch_events(args: argparse.Namespace) -> int:
    """memguardctl watch: each event as it comes (a JSON line each with
    --json), until the daemon stops (exit 3) or Ctrl-C (exit 0)."""
    error = None
    for path in sockets(args.socket):
        try:
            events = client.stream(path, "watch", {}, timeout=args.timeout)
            first = next(events)
        except client.Unreachable as e:
            error = e
            if e.absent:
                continue
            break
        except client.RemoteError as e:
            print(f"memguardctl: watch: {e.message} ({e.code})", file=sys.stderr)
            return EXIT_REFUSED
        print(f"watching memguardd on {path}: {first['sees']}", file=sys.stderr, flush=True)
        try:
            for event in events:
                print(json.dumps(event) if args.json else render_event(event), flush=True)
        except KeyboardInterrupt:
            return EXIT_OK
        print("memguardctl: watch: memguardd closed the connection", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"memguardctl: {error}", file=sys.stderr)
    return EXIT_UNREACHABLE


def profile_domains(args: argparse.Namespace) -> int:
    """memguardctl profile: wait out the window (unless --past), then ask
    the daemon for its samples of it."""
    if not 0 < args.duration <= 600:
        print("memguardctl: profile: --duration must be more than 0 and at most 600 seconds", file=sys.stderr)
        return EXIT_USAGE
    if not args.past:
        print(f"profiling for {args.duration:g} s ...", file=sys.stderr)
        time.sleep(args.duration)
    answer = ask_daemon(args, "history", {"seconds": args.duration, "domains": args.domain})
    if isinstance(answer, int):
        return answer
    doc = profile.summarise(answer[1]["domains"], args.duration)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(doc, f, indent=1)
    if args.plot:
        try:
            profile.plot(doc, args.plot)
        except ImportError:
            print("memguardctl: profile: --plot needs matplotlib (pip install 'memguard[plot]')", file=sys.stderr)
            return EXIT_ERROR
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(profile.render(doc))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "rules" and args.action == "check":
        return rules_check(args.files, args.json)
    if args.command == "rules":
        return rules_test(args.files, args.trace, args.json)
    if args.command == "explain":
        return explain_text(args.file, args.json)
    if args.command == "run":
        return run_job(args)
    if args.command == "profile":
        return profile_domains(args)
    if args.command == "watch":
        return watch_events(args)
    if args.command == "top":
        return top_view(args)
    if args.command == "notify-agent":
        try:
            return notify.agent(sockets(args.socket), args.timeout, args.repeat, args.recent)
        except KeyboardInterrupt:
            return EXIT_OK
    params: dict = {}
    if args.command == "register":
        try:
            params = {"registration": registration(args, args.name), "pid": args.pid}
        except JobSpecError as e:
            print(f"memguardctl: register: {e}", file=sys.stderr)
            return EXIT_USAGE
    elif args.command == "incident":
        params = {"id": args.id}
    elif args.command == "unregister":
        params = {"job": args.job}
    answer = ask_daemon(args, args.command, params)
    if isinstance(answer, int):
        return answer
    path, result = answer
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.command == "status":
        sys.stdout.write(render_status(result, path))
    elif args.command == "incidents":
        sys.stdout.write(render_list(result))
    elif args.command == "jobs":
        sys.stdout.write(render_jobs(result))
    elif args.command == "register":
        print(f"registered pid {result['pid']} as job {result['job']}")
    elif args.command == "unregister":
        print(f"unregistered job {result['job']}")
    elif args.command == "incident":
        sys.stdout.write(render_incident(result))
    elif args.command == "reload":
        print(f"rules reloaded: {result['rules']} in force" if result["reloaded"]
              else f"rules NOT reloaded ({result['error']}); the last good {result['rules']} stay in force")
        if not result["reloaded"]:
            return EXIT_ERROR
    else:
        print(f"memguardd {result['version']} (protocol {result['protocol']})")
    if args.command == "incident" and args.plot:
        try:
            plot(result, args.plot)
        except ImportError:
            print("memguardctl: --plot needs matplotlib: pip install 'memguard[plot]'", file=sys.stderr)
            return EXIT_ERROR
    if args.command == "status" and not result.get("healthy", True):
        return EXIT_DEGRADED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
