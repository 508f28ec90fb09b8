"""Bad input never takes memguard down (issue 24): every parser of what the
kernel, a user or a client hands it either returns a value or raises the
one error its caller turns into a message naming the place.  Hypothesis
draws the input: plain garbage, and garbage shaped like the real thing
(the shape is where parsers break).  The kmsg and OOM-report parsers have
their own in test_oom_report.py.

MEMGUARD_FUZZ_EXAMPLES=N runs each property N times (docs/reliability.md
records a long run); the default keeps `make test` quick.
"""

from __future__ import annotations

import json
import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memguard.api.protocol import ProtocolError, parse_request
from memguard.config import ConfigError, parse_config
from memguard.daemon import _allocator_params, _snapshot_param
from memguard.incidents.explain import explain
from memguard.jobs.spec import JobSpec, JobSpecError, parse_job
from memguard.rules.load import RuleError, parse_rules
from memguard.sources.cgroup_v1 import parse_limit, pick
from memguard.sources.cgroup_v2 import parse_max
from memguard.sources.meminfo import parse_arcstats, parse_meminfo, parse_vmstat_oom_kill
from memguard.sources.psi import parse_psi
from memguard.sources.wsl import parse_wsl_size, parse_wslconfig

EXAMPLES = int(os.environ.get("MEMGUARD_FUZZ_EXAMPLES", "150"))
PROPERTIES = settings(deadline=None, derandomize=bool(os.environ.get("CI")), max_examples=EXAMPLES,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Text as the kernel and users write it, and as they should not: digits,
# separators, units, non-ASCII, controls, surrogates decoded with replace.
ODD = st.text(alphabet=st.sampled_from(list(string.printable) + ["\x00", "\x1b", "é", "\u2028", "\ufffd", "−"]),
              max_size=120)
NUMBERS = st.one_of(st.integers(-2**70, 2**70).map(str), st.floats(allow_nan=True).map(str), st.sampled_from(
    ["max", "", "-1", "0x10", "1e3", "9" * 30, " 5", "5 ", "+7"]))


def lines_of(keys, values, seps=(":", " ", "=", ": ", "\t")):
    return st.lists(st.tuples(st.sampled_from(keys) | ODD, st.sampled_from(seps), values,
                              st.sampled_from(["", " kB", " MB", "kB", " "])), max_size=12).map(
        lambda rows: "\n".join(f"{k}{s}{v}{u}" for k, s, v, u in rows))


@PROPERTIES
@given(st.one_of(ODD, lines_of(["MemTotal", "MemFree", "MemAvailable", "Cached", "SwapTotal", "SwapFree",
                                "Shmem"], NUMBERS)))
def test_meminfo(text):
    try:
        fields = parse_meminfo(text)
    except ValueError:
        return
    assert all(isinstance(v, int) for v in fields.values())


@PROPERTIES
@given(st.one_of(ODD, lines_of(["size", "c_min", "c_max", "p"], NUMBERS, seps=(" 4 ", " ", "  4  "))))
def test_arcstats_and_vmstat(text):
    for parse in (parse_arcstats, parse_vmstat_oom_kill):
        try:
            parse(text)
        except ValueError:
            pass


PSI_LINE = st.tuples(st.sampled_from(["some", "full", "half", ""]),
                     st.lists(st.tuples(st.sampled_from(["avg10", "avg60", "avg300", "total", "x"]), NUMBERS),
                              max_size=5)).map(lambda t: t[0] + " " + " ".join(f"{k}={v}" for k, v in t[1]))


@PROPERTIES
@given(st.one_of(ODD, st.lists(PSI_LINE, max_size=3).map("\n".join)))
def test_pressure(text):
    try:
        parse_psi(text)
    except ValueError:
        pass


@PROPERTIES
@given(st.one_of(ODD, NUMBERS), st.binary(max_size=200),
       lines_of(["total_inactive_file", "hierarchical_memory_limit", "total_swap", "inactive_file"], NUMBERS,
                seps=(" ",)))
def test_cgroup_files(text, raw, stat):
    for parse in (parse_limit, parse_max):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert value is None or isinstance(value, int)
    for data in (raw, stat.encode("utf-8", "surrogatepass")):
        try:
            picked = pick(data, (b"total_inactive_file", b"hierarchical_memory_limit", b"inactive_file"))
        except ValueError:
            continue
        assert all(isinstance(v, int) for v in picked.values())


@PROPERTIES
@given(st.one_of(ODD, lines_of(["memory", "swap", "processors", "[wsl2]", "[experimental]", "autoMemoryReclaim"],
                               st.one_of(NUMBERS, st.sampled_from(["4GB", "512MB", "1.5GB", "8 GB", "GB"])),
                               seps=("=", " = ", ":"))))
def test_wslconfig(text):
    try:
        parse_wslconfig(text)
    except ValueError:
        pass
    try:
        parse_wsl_size(text[:20])
    except ValueError:
        pass


@pytest.mark.parametrize("size", ["INF", "-inf", "NaN", "-1GB", "1e30TB"])
def test_wsl_sizes_found_by_fuzzing(size):
    # memory=INF in a .wslconfig raised OverflowError, which no caller expects.
    with pytest.raises(ValueError, match="expected a size"):
        parse_wsl_size(size)


@PROPERTIES
@given(st.one_of(ODD, st.lists(st.one_of(st.sampled_from(["train", "warning=USR1", "critical=TERM", "target=all",
                                                          "hook=echo hi", "warning=", "=", "hook=", "x=y",
                                                          "warning=99", "target=none"]), ODD),
                               max_size=5).map(",".join)))
def test_memguard_job(value):
    try:
        spec = parse_job(value)
    except JobSpecError:
        return
    assert isinstance(spec, JobSpec)


YAMLISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False),
                                 ODD, st.sampled_from(["250ms", "2s", "5m", "0660", "auto", "off", "*"])),
                       lambda inner: st.one_of(st.lists(inner, max_size=4),
                                               st.dictionaries(st.sampled_from(
                                                   ["sampling", "interval", "metrics", "listen", "rules", "files",
                                                    "actions", "when", "severity", "name", "match", "for",
                                                    "levels", "signal", "kill", "prefer", "socket_mode", "gpu",
                                                    "incidents", "private", "x"]) | ODD, inner, max_size=4)),
                       max_leaves=12)


@PROPERTIES
@given(st.one_of(ODD, YAMLISH.map(lambda v: json.dumps(v, ensure_ascii=False))))
def test_config_yaml(text):
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.yaml"), e


@PROPERTIES
@given(st.one_of(ODD, YAMLISH.map(lambda v: json.dumps({"rules": [v]}, ensure_ascii=False)),
                 st.builds(lambda name, when, sev: f"rules:\n  - name: {name}\n    when: {when}\n    severity: {sev}\n",
                           ODD, ODD, ODD)))
def test_rules_yaml(text):
    try:
        parse_rules(text, "fuzz-rules.yaml")
    except RuleError as e:
        assert str(e).startswith("fuzz-rules.yaml"), e


@PROPERTIES
@given(st.one_of(st.binary(max_size=300),
                 YAMLISH.map(lambda v: json.dumps({"method": "status", "params": v}).encode()),
                 YAMLISH.map(lambda v: json.dumps({"id": v, "method": v}).encode())))
def test_control_requests(line):
    try:
        method, params = parse_request(line)
    except ProtocolError:
        return
    assert isinstance(method, str) and isinstance(params, dict)


@PROPERTIES
@given(YAMLISH)
def test_cuda_report_parameters(value):
    for check in (lambda v: _allocator_params({"device": v, "stats": v}), lambda v: _snapshot_param(v)):
        try:
            check(value)
        except ProtocolError:
            pass


@PROPERTIES
@given(st.one_of(ODD, st.lists(st.sampled_from(
    ["[ 1.0] python invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
     "[ 1.1] Memory cgroup out of memory: Killed process 42 (python) total-vm:1kB, anon-rss:1kB, file-rss:0kB",
     "[ 1.2] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task=x",
     "[ 1.3] [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
     "[ 1.4] [     42]     0    42    12345     6789    65536        0             0 python"]) | ODD,
    max_size=8).map("\n".join)))
def test_a_pasted_log(text):
    result = explain(text)
    assert isinstance(result["incidents"], list)
