"""The predictor on synthetic series of the shapes real workloads have."""

import math

import pytest

from memguard.predict.predictor import envelope, leak_rate, predict_points as predict, theil_sen

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
    assert p.method == "linear" and p.confidence > 0.9
    assert p.tto == pytest.approx(expected, rel=0.05)
    assert p.rate == pytest.approx(rate, rel=0.02)


def test_accelerating_growth_is_sooner_than_a_line_says():
    pts = series(lambda t: 100 * MiB + 0.05 * MiB * t * t, seconds=100)
    now = pts[-1][0]
    p = predict(pts, LIMIT, now)
    # true: 100 + 0.05 t^2 = 1024 -> t = 135.9; 35.9 s left
    assert p.method == "accelerating"
    assert p.tto == pytest.approx(35.9, rel=0.25)


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


def test_page_cache_at_the_limit_leaves_the_working_set_flat():
    # the predictor is given the working set; page cache does not enter it
    pts = series(lambda t: 50 * MiB, seconds=120)
    p = predict(pts, LIMIT, pts[-1][0])
    assert p.tto is None


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
