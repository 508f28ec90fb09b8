"""How long until a domain runs out: a pure function of its recent samples.

Method (docs/prediction.md says why, and where it is wrong):

1. The signal is the **working set** (usage minus reclaimable page cache):
   page cache filling a cgroup to its limit is reclaimed, not OOM-killed.
2. The samples are reduced to their **upper envelope**: the maximum of each
   time bucket.  A training loop's memory is a sawtooth (allocate during the
   step, free after it); what reaches the limit is the peaks, not the mean.
3. On several **horizons** (the last 30 s, 2 min and 10 min) the envelope's
   slope is estimated with the **Theil–Sen** estimator (the median of the
   slopes between every pair of points), which a few outliers or one step
   cannot drag, unlike least squares.  Where the recent half of a horizon
   grows clearly faster than the older half, growth is **accelerating** and
   a parabola or an exponential is extrapolated instead of a line; where it
   grows clearly slower, it is **levelling** off, and the growth still to
   come is what a rate decaying as it has adds up to.
4. A **release** (the envelope fell by a fifth of the limit and stayed
   down: a compiler ended) drops the envelope before it: that growth was
   another process's.
5. Each horizon gives a time to OOM and a **confidence**: how consistently
   the pairwise slopes agree on growth, scaled down when the horizon holds
   few points or covers little time.  The most confident horizon is
   reported, unless another sees the limit clearly sooner; a domain that is
   not growing has none.
6. The reported confidence is scaled by how far the prediction **reaches**
   beyond what it watched (``reach``: observed seconds over time to OOM)
   and by how far the growth stands out of the envelope's scatter
   (``signal``): a short climb far from the limit, or a drift among a
   sawtooth's wandering peaks, is no grounds for a critical.
7. A **burst** (the envelope jumped by more than a tenth of the limit within
   the last few seconds) is reported honestly: the short time the jump
   implies, with a low confidence, method ``burst``.
8. A working set that rose while usage, below the limit, did not was
   file pages turning **activated**, not memory allocated: no time to OOM
   (``activated()``, which the engine applies: it alone sees usage).

A **leak** is separate from an imminent OOM: growth that has held for
minutes (the long horizon, most pairwise slopes positive) is reported as a
rate per minute whether or not the limit is near.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HORIZONS = (30.0, 120.0, 600.0)       # seconds
BUCKETS = 15                          # envelope points per horizon
MIN_POINTS = 5                        # fewer: that horizon says nothing
GOOD_POINTS = 8                       # as many as a horizon needs for full confidence
MIN_CONFIDENCE = 0.5                  # below: a horizon's TTO is not used
BURST_FRACTION = 0.10                 # a jump of a tenth of the limit...
BURST_WINDOW = 5.0                    # ...within this many seconds...
BURST_RATIO = 3.0                     # ...and this many times faster than the last 30 s
ACCELERATION = 1.5                    # recent half's slope / older half's: accelerating
ACCELERATION_SEEN = 0.5               # an acceleration is watched over the recent half of its horizon
LEAK_HORIZON = 600.0
LEAK_MIN_SPAN = 180.0                 # a leak holds for minutes
LEAK_CONSISTENCY = 0.8                # share of pairwise slopes that are positive
LEAK_MIN_RATE = 1 << 20               # bytes per minute: slower is noise, not a leak worth naming
RELEASE_FRACTION = 0.2               # a fall of the envelope by a fifth of the limit: memory released
RELEASE_NOW = 0.3                    # the newest sample this far below its bucket's peak: released now
SOONER = 0.8                          # a horizon whose TTO is this much shorter is believed
NOISE_FRACTION = 0.01                 # growth under 1% of the limit over a horizon is noise
EXTRAPOLATION = 1.0                   # a prediction is trusted as far ahead as it saw growth (bench/predict.py --set tuning)
SIGNAL = 4.0                          # growth this many times the envelope's scatter: the trend is real
USAGE_ROOM = 0.03                     # usage this far below the limit: nothing is reclaimed to make room
ACTIVATION_WINDOW = 10.0              # seconds over which usage and working set are compared


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the predictor says of one domain.

    ``tto`` is seconds until the working set reaches the limit, None when it
    is not growing (or there is no limit); ``rate`` bytes per second of the
    envelope on the horizon used (0.0 when flat or unknown); ``confidence``
    0..1; ``method`` how it was obtained (``linear``, ``accelerating``,
    ``levelling``, ``burst``, ``released``, ``activated``, ``flat``,
    ``insufficient``, ``no_limit``); ``leak_rate`` bytes
    per minute of sustained growth over minutes, None when there is none.
    """

    tto: float | None
    rate: float
    confidence: float
    method: str
    horizon: float | None = None
    headroom: float | None = None
    leak_rate: float | None = None
    observed: float | None = None    # seconds of the envelope the prediction rests on
    scatter: float | None = None     # bytes: the envelope's spread about its trend line


def reach(observed: float | None, tto: float | None) -> float:
    """How far ahead a prediction may be trusted: fully as far as the growth
    it rests on was watched (*observed* seconds), less and less beyond.  A
    compile climbing for 8 s through the middle of its limit says little of
    where it will be in 35 s; a leak watched for 5 minutes says much of the
    next 5."""
    if tto is None or tto <= 0 or observed is None:
        return 1.0
    return min(1.0, EXTRAPOLATION * observed / tto)


def signal(rate: float, observed: float | None, scatter: float | None) -> float:
    """How far the growth stands out of the envelope's own scatter: 0 when
    the rise over what was watched is no larger than the scatter (noise
    could draw that trend), 1 from SIGNAL times it.  A training sawtooth's
    peaks wander; a drift of a few MB/s among them is not growth."""
    if observed is None or not scatter:
        return 1.0
    ratio = rate * observed / scatter
    return min(1.0, max(0.0, (ratio - 1.0) / (SIGNAL - 1.0)))


def scatter_about(points: list[tuple[float, float]], slope: float) -> float:
    """The median absolute distance of *points* from the line of *slope*
    through their median (robust, as Theil-Sen is)."""
    offsets = sorted(v - slope * t for t, v in points)
    mid = offsets[len(offsets) // 2]
    deviations = sorted(abs(o - mid) for o in offsets)
    return deviations[len(deviations) // 2]


def width(horizon: float) -> float:
    """The envelope's bucket width for a horizon: BUCKETS points across it."""
    return horizon / BUCKETS


def envelope(points: list[tuple[float, float]], horizon: float, now: float) -> list[tuple[float, float]]:
    """The upper envelope of *points* over the last *horizon* seconds: the
    maximum of each clock-aligned bucket of ``width(horizon)``, at the time
    of that maximum (what engine.recorder.Envelope keeps incrementally)."""
    return envelope_lows(points, horizon, now)[0]


def envelope_lows(points: list[tuple[float, float]], horizon: float,
                  now: float) -> tuple[list[tuple[float, float]], list[float]]:
    """envelope() and the minimum of each of its buckets."""
    w = width(horizon)
    best: dict[int, tuple[float, float]] = {}
    low: dict[int, float] = {}
    for t, v in points:
        b = int(t // w)
        if b not in best or v >= best[b][1]:
            best[b] = (t, v)
        low[b] = min(low.get(b, v), v)
    kept = [b for b in sorted(best) if best[b][0] >= now - horizon]
    return [best[b] for b in kept], [low[b] for b in kept]


def theil_sen(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(median pairwise slope, share of pairwise slopes that are positive)."""
    slopes = []
    positive = 0
    n = len(points)
    for i in range(n):
        ti, vi = points[i]
        for j in range(i + 1, n):
            tj, vj = points[j]
            if tj > ti:
                s = (vj - vi) / (tj - ti)
                slopes.append(s)
                positive += s > 0
    if not slopes:
        return 0.0, 0.0
    slopes.sort()
    m = len(slopes)
    median = slopes[m // 2] if m % 2 else (slopes[m // 2 - 1] + slopes[m // 2]) / 2
    return median, positive / m


def ls_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope: O(n), the cheap first look before Theil-Sen's O(n^2)."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if var == 0 else sum((t - mt) * (v - mv) for t, v in points) / var


def _quadratic_tto(points: list[tuple[float, float]], limit: float, now: float) -> tuple[float, float] | None:
    """(time until a least-squares parabola through *points* reaches *limit*,
    its squared residual), or None when it never does."""
    t0 = points[0][0]
    xs = [t - t0 for t, _ in points]
    ys = [v for _, v in points]
    n = len(xs)
    sx = [sum(x ** k for x in xs) for k in range(5)]
    sxy = [sum((x ** k) * y for x, y in zip(xs, ys)) for k in range(3)]
    # normal equations for y = a + b x + c x^2
    m = [[sx[0], sx[1], sx[2], sxy[0]], [sx[1], sx[2], sx[3], sxy[1]], [sx[2], sx[3], sx[4], sxy[2]]]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(3):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [a - f * b for a, b in zip(m[r], m[col])]
    a, b, c = (m[i][3] / m[i][i] for i in range(3))
    residual = sum((a + b * x + c * x * x - y) ** 2 for x, y in zip(xs, ys))
    x_now = now - t0
    # solve c x^2 + b x + (a - limit) = 0 for the first root after now
    if abs(c) < 1e-18:
        return None if b <= 0 else (max(0.0, (limit - a) / b - x_now), residual)
    disc = b * b - 4 * c * (a - limit)
    if disc < 0 or n < 3:
        return None
    roots = sorted(((-b - math.sqrt(disc)) / (2 * c), (-b + math.sqrt(disc)) / (2 * c)))
    after = [r for r in roots if r >= x_now - 1e-9]
    return (after[0] - x_now, residual) if after else None


def _exponential_tto(points: list[tuple[float, float]], limit: float, now: float) -> tuple[float, float] | None:
    """(time until ``v = e^(b + k t)``, fitted to *points* by Theil-Sen on
    log v, reaches *limit*, its squared residual), or None."""
    logs = [(t, math.log(v)) for t, v in points if v > 0]
    if len(logs) < 3:
        return None
    k, _ = theil_sen(logs)
    if k <= 0:
        return None
    b = sorted(lv - k * t for t, lv in logs)[len(logs) // 2]
    residual = sum((math.exp(b + k * t) - v) ** 2 for t, v in points)
    v_now = math.exp(b + k * now)
    return (0.0 if v_now >= limit else (math.log(limit) - math.log(v_now)) / k), residual


def _levelling_tto(env, half: int, older: float, recent: float, headroom: float, now: float) -> float | None:
    """Time until a rate decaying exponentially, from *older* (the slope of
    the envelope's older half) to *recent* (its recent half's), has added
    *headroom*; None when all it will ever add is less (it levels off below
    the limit)."""
    c_old = (env[0][0] + env[half][0]) / 2
    c_new = (env[half][0] + env[-1][0]) / 2
    tau = (c_new - c_old) / math.log(older / recent)       # rate falls by e every tau seconds
    rate_now = recent * math.exp(-(now - c_new) / tau)
    remaining = rate_now * tau                             # all the growth still to come
    if remaining <= headroom:
        return None
    return -tau * math.log(1 - headroom / remaining)


def since_release(env: list[tuple[float, float]], lows: list[float] | None,
                  limit: float) -> list[tuple[float, float]]:
    """*env* from its last release on: a bucket that fell more than
    RELEASE_FRACTION of the limit below the peak of the bucket before it,
    and neither it nor the next bucket climbed back to that peak (a compiler
    or a job step ended; a sawtooth is back at its peak within a step, even
    when one bucket's samples missed it).  Only complete buckets are judged:
    the newest is still filling.  Growth before a release was another
    process's; it says nothing of the growth now.  *lows* are the buckets'
    minima (without them, the peaks' own fall is judged)."""
    drop = RELEASE_FRACTION * limit
    for i in range(len(env) - 3, 0, -1):
        before = env[i - 1][1]
        if env[i][1] < before and env[i + 1][1] < before and before - (lows[i] if lows else env[i][1]) > drop:
            return env[i:]
    return env


def _horizon(env, lows, limit, now, horizon) -> Prediction | None:
    env = since_release(env, lows, limit)
    if len(env) < MIN_POINTS:
        return None
    if ls_slope(env) * horizon < NOISE_FRACTION * limit:
        # Not growing by least squares, or by less than the noise: most
        # domains, most of the time.  Theil-Sen could still find a small
        # positive median; it is not worth 100 pairs a tick per idle domain.
        return Prediction(None, 0.0, 0.0, "flat", horizon, limit - env[-1][1])
    span = env[-1][0] - env[0][0]
    slope, consistency = theil_sen(env)
    current = env[-1][1]
    headroom = limit - current
    # A third of the horizon and 8 points are enough to trust a consistent
    # slope: a ramp that began 12 s ago is not less of a ramp on the 30 s horizon.
    coverage = min(1.0, 3 * span / horizon)
    fill = min(1.0, len(env) / GOOD_POINTS)
    confidence = max(0.0, (2 * consistency - 1)) * coverage * fill
    if slope <= 0 or consistency <= 0.5:
        return Prediction(None, max(0.0, slope), confidence, "flat", horizon, headroom)
    half = len(env) // 2
    older, _ = theil_sen(env[:half + 1])
    recent, recent_consistency = theil_sen(env[half:])
    if (older > 0 and recent > ACCELERATION * older and len(env) >= 6
            and theil_sen(env[half:-1])[0] > ACCELERATION * older):
        # (also without the newest point: one sample of a sawtooth's peak
        # after a run of its troughs is no acceleration)
        # A parabola or an exponential (a leak that doubles, which a parabola
        # underestimates): whichever fits the envelope better.
        fits = [f for f in (_quadratic_tto(env, limit, now), _exponential_tto(env, limit, now)) if f is not None]
        if fits:
            tto, _ = min(fits, key=lambda f: f[1])
            # It rests on the recent half, where the curve bent: how far it
            # reaches is reckoned from that, not from the whole horizon.
            return Prediction(tto, recent, confidence, "accelerating", horizon, headroom,
                              observed=ACCELERATION_SEEN * span, scatter=scatter_about(env, slope))
    if older > 0 and recent * ACCELERATION < older:
        # Levelling off: a start-up ramp reaching its working size, a
        # compiler past its peak.  The growth that remains is what a rate
        # decaying as it has so far adds up to; a curve that bends away
        # from the limit is no more sure to reach it than its recent half.
        confidence = min(confidence, max(0.0, 2 * recent_consistency - 1) * coverage * fill)
        if recent <= 0:
            return Prediction(None, 0.0, confidence, "flat", horizon, headroom)
        tto = _levelling_tto(env, half, older, recent, headroom, now)
        return Prediction(tto, recent, confidence, "levelling", horizon, headroom, observed=span, scatter=scatter_about(env, slope))
    tto = max(0.0, headroom / slope)
    return Prediction(tto, slope, confidence, "linear", horizon, headroom, observed=span, scatter=scatter_about(env, slope))


def _burst(recent, limit, now, before: float | None) -> Prediction | None:
    """A jump of more than BURST_FRACTION of the limit in the last
    BURST_WINDOW seconds above *before*, the highest point of the envelope
    before that window (a sawtooth that falls back and climbs to the same
    peaks every step is no burst)."""
    if len(recent) < 2:
        return None
    low = min(v for _, v in recent[:-1])
    base = low if before is None else max(low, before)
    t_last, v_last = recent[-1]
    jump = v_last - base
    if jump < BURST_FRACTION * limit:
        return None
    t_low = min(t for t, v in recent[:-1] if v == low)
    rate = (v_last - low) / max(t_last - t_low, 1e-3)
    tto = max(0.0, (limit - v_last) / rate)
    return Prediction(tto, rate, 0.2, "burst", BURST_WINDOW, limit - v_last)


def leak_rate(env: list[tuple[float, float]]) -> float | None:
    """Bytes per minute of growth sustained over minutes in the envelope of
    the last LEAK_HORIZON seconds, or None."""
    if len(env) < MIN_POINTS or env[-1][0] - env[0][0] < LEAK_MIN_SPAN or ls_slope(env) * 60 < LEAK_MIN_RATE:
        return None
    slope, consistency = theil_sen(env)
    if slope <= 0 or consistency < LEAK_CONSISTENCY:
        return None
    return slope * 60.0


def predict(envs: dict[float, list[tuple[float, float]]], recent: list[tuple[float, float]],
            limit: float | None, now: float, lows: dict[float, list[float]] | None = None) -> Prediction:
    """The prediction for a domain from its upper envelopes per horizon
    (``envs[h]``: the points of the last h seconds, oldest first; ``lows[h]``
    their buckets' minima) and its samples of the last BURST_WINDOW seconds
    (*recent*).  Never raises: too few samples give method ``insufficient``,
    no limit gives ``no_limit``."""
    lows = lows or {}
    leak = leak_rate(envs.get(LEAK_HORIZON, []))
    if not limit or limit <= 0 or math.isnan(limit):
        return Prediction(None, 0.0, 0.0, "no_limit", leak_rate=leak)
    current = recent[-1][1] if recent else None
    if current is None:
        return Prediction(None, 0.0, 0.0, "insufficient")
    short_env = envs.get(HORIZONS[0], [])
    if short_env and short_env[-1][1] - current > RELEASE_NOW * limit:
        # Memory was released in this very bucket: the envelope still holds
        # the peak before it, and a prediction from it would be stale.
        return Prediction(None, 0.0, 0.0, "released", headroom=limit - current, leak_rate=leak)
    candidates = [p for h in HORIZONS
                  if (p := _horizon(envs.get(h, []), lows.get(h), limit, now, h)) is not None]
    earlier = [v for t, v in since_release(short_env, lows.get(HORIZONS[0]), limit) if t < now - BURST_WINDOW]
    burst = _burst(recent, limit, now, max(earlier) if earlier else None)
    short = next((p for p in candidates if p.horizon == HORIZONS[0]), None)
    if burst is not None and short is not None and short.rate > 0 and burst.rate < BURST_RATIO * short.rate:
        burst = None  # a steady fast ramp, which the horizons predict, not a burst
    growing = [p for p in candidates if p.tto is not None and p.confidence >= MIN_CONFIDENCE]
    if growing:
        # The most confident horizon, unless a confident one sees it coming
        # clearly sooner (the short horizon catching a new ramp first).
        best = max(growing, key=lambda p: p.confidence * reach(p.observed, p.tto))
        sooner = min(growing, key=lambda p: p.tto)
        if sooner.tto < SOONER * best.tto:
            best = sooner
        if burst is not None and burst.tto < best.tto:
            best = burst
    elif burst is not None:
        best = burst
    elif candidates:
        best = max(candidates, key=lambda p: p.confidence)
        best = Prediction(None, best.rate, best.confidence, "flat", best.horizon, best.headroom)
    else:
        best = Prediction(None, 0.0, 0.0, "insufficient", headroom=limit - current)
    # Horizons are chosen on how well each fits; what the winner is worth
    # then depends on how far ahead of what it watched it reaches.
    confidence = best.confidence * reach(best.observed, best.tto) * signal(best.rate, best.observed, best.scatter)
    return Prediction(best.tto, best.rate, round(confidence, 3), best.method, best.horizon,
                      best.headroom, leak, best.observed, best.scatter)


def activated(p: Prediction, then: tuple[float, float] | None, now: tuple[float, float],
              limit: float | None) -> Prediction:
    """*p*, or no time to OOM when, over the last ACTIVATION_WINDOW seconds
    (from *then* to *now*, each a (usage, working set) pair), the working
    set rose by more than noise while usage did not, and usage is more than
    USAGE_ROOM below the limit.  The working set is usage less inactive file
    pages: a program re-reading a file promotes its pages to the active list
    and the working set climbs toward usage with nothing allocated
    (tool-awk-join_fits in bench/traces: +85 MiB in 26 s with anonymous
    memory flat, called critical at 95 %).  Below the limit nothing is
    reclaimed, so new memory would show in usage; at the limit usage is
    pinned while reclaim makes room, and the working set's rise is real
    (torch_leak)."""
    if p.tto is None or then is None or not limit:
        return p
    noise = NOISE_FRACTION * limit
    (used_then, ws_then), (used_now, ws_now) = then, now
    if used_now - used_then >= noise or ws_now - ws_then < noise or used_now >= (1 - USAGE_ROOM) * limit:
        return p
    return Prediction(None, 0.0, p.confidence, "activated", p.horizon, p.headroom, p.leak_rate,
                      p.observed, p.scatter)


def predict_points(points: list[tuple[float, float]], limit: float | None, now: float) -> Prediction:
    """predict() from raw (time, working set) samples, oldest first."""
    both = {h: envelope_lows(points, h, now) for h in HORIZONS}
    return predict({h: e for h, (e, _) in both.items()}, [(t, v) for t, v in points if t >= now - BURST_WINDOW],
                   limit, now, {h: low for h, (_, low) in both.items()})
