import pytest

from memguard.clock import FakeClock
from memguard.sources.base import Unavailable
from memguard.sources.meminfo import HostSource, arc_reclaimable, parse_arcstats, parse_meminfo
from memguard.sources.psi import PsiSource, parse_psi

from tests.trees import PSI

ARCSTATS = """\
13 1 0x01 123 33456 12345678 987654321
name                            type data
hits                            4    1234
size                            4    3000000000
c_min                           4    1000000000
c_max                           4    8000000000
"""


def test_parse_psi_some_and_full():
    psi = parse_psi(PSI)
    assert psi.some.avg10 == 1.5 and psi.some.total_us == 123456
    assert psi.full.avg300 == 0.05


def test_parse_psi_without_full_line():
    # /proc/pressure/cpu before 5.13 had only "some"; tolerate it for memory too.
    psi = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert psi.full is None


def test_parse_psi_skips_a_line_it_does_not_know():
    # A later kernel may add lines; only 'some' and 'full' are read (as
    # prometheus/procfs does), whole words: "fuller" is not "full".
    text = ("garbage line\n" + PSI + "fuller avg10=9.00 avg60=9.00 avg300=9.00 total=9\n"
            "stall_max_us 42\n")
    assert parse_psi(text) == parse_psi(PSI)
    assert (parse_psi(text).full.avg10, parse_psi(text).full.total_us) == (0.75, 65432)


def test_parse_psi_skips_a_key_it_does_not_know():
    text = ("some avg10=1.50 new_key=7 avg60=0.50 avg300=0.10 total=123456 max_stall_us=42\n"
            "full avg10=0.75 avg60=0.25 avg300=0.05 total=65432 max_stall_us=7\n")
    assert parse_psi(text) == parse_psi(PSI)
    assert (parse_psi(text).some.avg60, parse_psi(text).some.total_us) == (0.5, 123456)


@pytest.mark.parametrize("bad,what", [
    ("", "psi: the 'some' line is missing"),
    ("garbage line\n", "psi: the 'some' line is missing"),
    ("full avg10=0 avg60=0 avg300=0 total=0\n", "psi: the 'some' line is missing"),
    ("some avg10=1\n", "psi: the 'some' line lacks field avg60"),
    ("some avg10=x avg60=0 avg300=0 total=0", "psi: the 'some' line's avg10='x' is not a number"),
    ("some avg10=0 avg60=0 avg300=0 total=0\nfull avg10=0 avg60=0 avg300=0 total=1.5\n",
     "psi: the 'full' line's total='1.5' is not a number"),
    ("some avg10=0 avg60=0 avg300=0 total=0 oops\n", "psi: the 'some' line has 'oops' where key=value belongs"),
])
def test_parse_psi_rejects_a_malformed_known_line_by_name(bad, what):
    with pytest.raises(ValueError) as e:
        parse_psi(bad, "psi")
    assert str(e.value) == what


def test_psi_source_names_its_file_in_a_parse_error(tree):
    path = tree.write("proc/pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00\n")
    with pytest.raises(ValueError) as e:
        PsiSource(tree.roots).collect(FakeClock().now())
    assert str(e.value) == f"{path}: the 'some' line lacks field total"


def test_psi_source_unavailable_without_config_psi(tree):
    tree.mkdir("proc")
    with pytest.raises(Unavailable, match="CONFIG_PSI"):
        PsiSource(tree.roots).collect(FakeClock().now())


def test_meminfo_in_bytes_and_unitless_lines():
    m = parse_meminfo("MemTotal: 100 kB\nHugePages_Total: 3\nbroken\n")
    assert m == {"MemTotal": 102400, "HugePages_Total": 3}


def test_host_working_set_is_total_minus_available(v1_host):
    reading = HostSource(v1_host.roots).collect(FakeClock().now())
    (s,) = reading.samples
    assert s.domain == "host" and s.limit == 8_000_000 * 1024
    assert s.used == (8_000_000 - 1_000_000) * 1024
    assert s.working_set == (8_000_000 - 5_000_000) * 1024
    assert s.swap_used == 500_000 * 1024 and s.swap_limit == 2_000_000 * 1024
    assert s.oom_kills == 7


def test_zfs_arc_counts_as_reclaimable_only_above_c_min(v1_host):
    v1_host.write("proc/spl/kstat/zfs/arcstats", ARCSTATS)
    arc = parse_arcstats(ARCSTATS)
    assert arc_reclaimable(arc) == 2_000_000_000
    (s,) = HostSource(v1_host.roots).collect(FakeClock().now()).samples
    assert s.working_set == (8_000_000 - 5_000_000) * 1024 - 2_000_000_000


def test_arc_below_its_floor_gives_nothing():
    assert arc_reclaimable({"size": 10, "c_min": 50}) == 0


def test_host_source_names_the_missing_field(tree):
    tree.write("proc/meminfo", "MemTotal: 100 kB\nMemFree: 50 kB\n")
    with pytest.raises(ValueError, match="lacks MemAvailable"):
        HostSource(tree.roots).collect(FakeClock().now())


def test_wsl_host_is_one_domain_named_wsl(v1_host):
    (s,) = HostSource(v1_host.roots, domain="wsl").collect(FakeClock().now()).samples
    assert (s.domain, s.kind) == ("wsl", "wsl")
