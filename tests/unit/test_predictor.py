"""The predictor on synthetic series of the shapes real workloads have."""

import math

import pytest

from memguard.clock import FakeClock
from memguard.config import Config
from memguard.engine.engine import Engine, SourceRun
from memguard.model import Sample
from memguard.predict.predictor import envelope, leak_rate, predict_points as predict, theil_sen
from memguard.sources.base import Reading

MiB = 2**20
LIMIT = 1024 * MiB


def series(f, seconds=300.0, step=0.5):
    n = int(seconds / step)
    return [(i * step, f(i * step)) for i in range(n + 1)]


def test_theil_sen_ignores_an_outlier():
    pts = [(t, 2.0 * t) for t in range(10)]
    pts[4] = (4, 1000.0)
    slope, consistency = theil_sen(pts)
    assert slope == pytest.approx(2.0) and consistency > 0.8


def test_envelope_keeps_the_peaks():
    pts = [(t / 10, (t % 10) * 1.0) for t in range(300)]   # sawtooth 0..9, 1 s period
    env = envelope(pts, 30.0, 29.9)   # buckets of 2 s
    assert [v for _, v in env] == [9.0] * 15


def test_steady_leak_time_to_oom():
    rate = 2 * MiB  # per second
    pts = series(lambda t: 200 * MiB + rate * t, seconds=120)
    now = pts[-1][0]
    p = predict(pts, LIMIT, now)
    expected = (LIMIT - pts[-1][1]) / rate
    assert p.method == "linear" and p.horizon == 120.0, "the horizon that watched it longest"
    assert p.tto == pytest.approx(expected, rel=0.05)
    assert p.rate == pytest.approx(rate, rel=0.02)
    # a perfect fit, but 2 minutes watched say less of the ~5 minutes ahead
    assert p.confidence == pytest.approx(p.observed / p.tto, abs=0.02) and 0.3 < p.confidence < 0.45


def test_confidence_reaches_as_far_as_the_growth_was_watched():
    # Issue 17: a compile climbing for 8-12 s through the middle of its limit was
    # called critical, its time to OOM extrapolated 35 s from those 8 s.
    climb = series(lambda t: 1400 * MiB + 40 * MiB * t, seconds=12)
    short = predict(climb, 3 * LIMIT, climb[-1][0])
    assert short.tto is not None and short.tto > 2 * short.observed
    assert short.confidence < 0.5, short
    # the same rate watched for as long as it has to go: full confidence
    long = series(lambda t: 200 * MiB + 2 * MiB * t, seconds=300)
    p = predict(long, LIMIT, long[-1][0])
    assert p.tto < p.observed and p.confidence > 0.9, p


def test_a_drift_no_larger_than_the_sawtooth_scatter_is_not_growth():
    # Issue 17: a steady training sawtooth whose peaks wander warned from an
    # envelope drifting 2 MB/s. Peaks wander +-40 MiB, drift 0.05 MiB/s.
    import random
    rng = random.Random(7)
    peaks = {k: rng.uniform(-40, 40) for k in range(200)}
    saw = series(lambda t: (500 + 0.05 * t + (peaks[int(t) // 2] if int(t) % 2 == 0 else -200)) * MiB, seconds=300)
    p = predict(saw, 1.5 * LIMIT, saw[-1][0])
    assert p.confidence < 0.3, p


def test_accelerating_growth_is_sooner_than_a_line_says():
    pts = series(lambda t: 100 * MiB + 0.05 * MiB * t * t, seconds=100)
    now = pts[-1][0]
    p = predict(pts, LIMIT, now)
    # true: 100 + 0.05 t^2 = 1024 -> t = 135.9; 35.9 s left
    assert p.method == "accelerating"
    assert p.tto == pytest.approx(35.9, rel=0.25)
    # the bend is watched over the recent half of the horizon: that is how
    # far ahead the curve is trusted (link-lto_j1_roomy in bench/traces was
    # warned at 29 % of its limit from a parabola reaching 43 s ahead)
    assert 0.25 * p.horizon < p.observed <= 0.5 * p.horizon, p


def test_sawtooth_training_steps_judge_the_peaks():
    # steps of 10 s: each rises by 400 MiB and falls back; no growth
    pts = series(lambda t: 300 * MiB + 400 * MiB * ((t % 10) / 10), seconds=300)
    p = predict(pts, LIMIT, pts[-1][0])
    assert p.tto is None and p.leak_rate is None


def test_sawtooth_whose_peaks_climb():
    pts = series(lambda t: 300 * MiB + 1 * MiB * t + 200 * MiB * ((t % 10) / 10), seconds=300)
    p = predict(pts, LIMIT, pts[-1][0])
    peak_now = 300 * MiB + 1 * MiB * 300 + 200 * MiB * 0.95
    assert p.tto == pytest.approx((LIMIT - peak_now) / MiB, rel=0.3)


def test_step_growth_like_a_caching_allocator():
    pts = series(lambda t: 100 * MiB + 64 * MiB * math.floor(t / 20), seconds=200)
    p = predict(pts, LIMIT, pts[-1][0])
    assert p.tto is not None and p.confidence >= 0.5
    # 3.2 MiB/s on average; 1024 - 676 = 348 MiB left -> ~109 s
    assert p.tto == pytest.approx(109, rel=0.5)


def test_plateau_near_the_limit_is_no_oom():
    pts = series(lambda t: min(0.9 * LIMIT, 100 * MiB + 10 * MiB * t), seconds=300)
    p = predict(pts, LIMIT, pts[-1][0])
    assert p.tto is None and p.method == "flat"


def test_page_cache_filling_up_is_not_growth():
    # A job streaming files: `used` climbs 2 MiB/s with the page cache for
    # two minutes, then 150 MiB/s for the last 2 s (a big file read at once),
    # 300 -> 840 MiB of 1 GiB; the working set (used - reclaimable cache)
    # stays at 200 MiB. Driven through the engine, which chooses what the
    # predictor sees: judged on `used`, the envelopes would show a release
    # and the recent samples a burst with 3 s to go.
    clock = FakeClock()
    engine = Engine(Config(), clock.now(), "t")
    cache = series(lambda t: 100 * MiB + 2 * MiB * t + 150 * MiB * max(0.0, t - 118), seconds=120)
    for _t, reclaimable in cache:
        sample = Sample("cgroup:/job", "cgroup", used=200 * MiB + int(reclaimable),
                        working_set=200 * MiB, limit=LIMIT, reclaimable=int(reclaimable),
                        identity=1, oom_kills=0)
        engine.step([SourceRun("cgroups", reading=Reading(samples=[sample]))], clock.now())
        clock.advance(0.5)
    state = engine.domains["cgroup:/job"]
    assert state.sample.used == 840 * MiB and state.sample.working_set == 200 * MiB
    p = state.prediction
    assert (p.method, p.tto, p.rate, p.leak_rate) == ("flat", None, 0.0, None), p
    assert p.headroom == LIMIT - 200 * MiB


def _drive(used, working_set, seconds=60.0, limit=LIMIT):
    """An engine fed used(t) and working_set(t) every 0.5 s: the domain's
    last prediction."""
    clock = FakeClock()
    engine = Engine(Config(), clock.now(), "t")
    for t, _ in series(lambda t: 0.0, seconds=seconds):
        u, ws = int(used(t)), int(working_set(t))
        sample = Sample("cgroup:/job", "cgroup", used=u, working_set=ws, limit=limit, reclaimable=u - ws,
                        identity=1, oom_kills=0)
        engine.step([SourceRun("cgroups", reading=Reading(samples=[sample]))], clock.now())
        clock.advance(0.5)
    return engine.domains["cgroup:/job"].prediction


def test_file_pages_turning_active_are_not_growth():
    # tool-awk-join_fits (bench/traces): awk re-reads its input; usage stays
    # at 95 % of the limit, anonymous memory flat, while inactive file pages
    # move to the active list and the working set climbs 3 MiB/s toward
    # usage. Nothing is allocated: below the limit new memory would show in usage.
    used = 0.95 * LIMIT
    p = _drive(lambda t: used, lambda t: used - 180 * MiB + 3 * MiB * t)
    assert (p.method, p.tto) == ("activated", None), p
    # the same working set, with usage climbing along: real growth
    p = _drive(lambda t: 0.80 * LIMIT + 3 * MiB * t, lambda t: used - 180 * MiB + 3 * MiB * t)
    assert p.method == "linear" and p.tto is not None, p


def test_a_working_set_rising_under_usage_pinned_at_the_limit_is_growth():
    # torch_leak's last phase: usage pinned at the limit while reclaim evicts
    # page cache to make room for the leak; the working set's rise is real.
    used = LIMIT - 4 * MiB
    p = _drive(lambda t: used, lambda t: used - 250 * MiB + 3 * MiB * t)
    assert p.method == "linear" and p.tto is not None, p


def test_burst_is_short_and_not_trusted():
    pts = series(lambda t: 100 * MiB if t < 100 else 700 * MiB, seconds=100.5)
    p = predict(pts, LIMIT, pts[-1][0])
    assert p.method == "burst" and p.confidence < 0.5 and p.tto < 5


def test_too_few_samples_and_no_limit():
    assert predict([(0.0, 1.0)], LIMIT, 0.0).method == "insufficient"
    assert predict(series(lambda t: t, 10), None, 10.0).method == "no_limit"


def test_leak_rate_over_minutes_even_far_from_the_limit():
    pts = series(lambda t: 100 * MiB + 0.1 * MiB * t + 5 * MiB * math.sin(t), seconds=600)
    assert leak_rate(envelope(pts, 600.0, pts[-1][0])) == pytest.approx(6 * MiB, rel=0.2)
    assert leak_rate(envelope(series(lambda t: 100 * MiB, 600), 600.0, 600.0)) is None


def test_a_flat_sawtooth_with_big_steps_is_no_burst():
    # Found in review: each step's rise from its trough was taken for a burst.
    pts = series(lambda t: 4096 * MiB + 2048 * MiB * ((t % 4) / 4), seconds=120)
    p = predict(pts, 10240 * MiB, pts[-1][0])
    assert p.method != "burst" and p.tto is None


def test_a_ramp_levelling_off_below_the_limit_is_no_oom():
    # a start-up ramp: fast at first, each second slower (to 600 MiB)
    pts = series(lambda t: 600 * MiB * (1 - math.exp(-t / 4)), seconds=14, step=0.25)
    for now in (10.0, 12.0, 14.0):
        p = predict([x for x in pts if x[0] <= now], LIMIT, now)
        assert p.method in ("levelling", "flat") and p.tto is None, (now, p)


def test_a_ramp_levelling_off_above_the_limit_still_reaches_it():
    # the same shape heading for 1.5 GiB: slowing, but not enough
    pts = series(lambda t: 1536 * MiB * (1 - math.exp(-t / 8)), seconds=12, step=0.25)
    now = pts[-1][0]
    p = predict(pts, LIMIT, now)
    true_tto = -8 * math.log(1 - 1024 / 1536) - now
    assert p.method == "levelling" and p.tto is not None
    assert p.tto == pytest.approx(true_tto, rel=0.35)


def test_growth_before_a_release_is_not_the_growth_now():
    # a compiler climbs to 680 MiB at ~14 s and exits; the next one climbs
    # fast and then slows, levelling off near 800 MiB (compile_fits)
    def ws(t):
        if t < 15:
            return 680 * MiB * (1 - math.exp(-t / 3))
        return 400 * MiB + 400 * MiB * (1 - math.exp(-(t - 15) / 6))
    pts = series(ws, seconds=27, step=0.25)
    p = predict(pts, LIMIT, pts[-1][0])
    assert p.tto is None, p


def test_the_sample_right_after_a_release_gives_no_stale_prediction():
    pts = series(lambda t: 100 * MiB + 30 * MiB * t, seconds=25, step=0.25)
    pts.append((25.1, 200 * MiB))   # the process holding 650 MiB just exited
    p = predict(pts, LIMIT, 25.1)
    assert p.method == "released" and p.tto is None


def test_one_peak_sample_after_a_run_of_troughs_is_no_acceleration():
    # a 2 s sawtooth sampled at its troughs for 14 s, then once at a peak
    pts = [(t, 40 * MiB + 5 * MiB * t) for t in [0.3 + 1.0 * i for i in range(15)]]
    pts.append((14.8, 40 * MiB + 5 * MiB * 14.8 + 128 * MiB))
    p = predict(pts, 512 * MiB, 14.8)
    assert p.method != "accelerating"
