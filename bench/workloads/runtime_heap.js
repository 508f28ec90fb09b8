// A Node service whose V8 heap grows and is collected, or only grows.
//
//   node --max-old-space-size=<MiB> [--expose-gc] bench/workloads/runtime_heap.js MODE SECONDS RATE_MB_S [PEAK_MB]
//
// MODE cycle: a session store: RATE_MB_S of session objects a second (each
//   a plain object holding a 1,000-element array of doubles, ~8 KiB on the
//   V8 heap, plus a string) are added to a Map until it holds PEAK_MB, then
//   the whole store is dropped (a cache flush) and filling starts again.
//   V8's old space, and the process's RSS, climb to about PEAK_MB plus what
//   the collector has not yet reclaimed, and fall after the major
//   collection that follows each flush: a sawtooth.
// MODE grow: the same objects, never dropped.  With --max-old-space-size
//   above the cgroup's limit the kernel's OOM killer ends node; below it, V8
//   aborts with "JavaScript heap out of memory".
//
// Prints heap figures every second; runs SECONDS.
'use strict';

const [mode, secondsArg, rateArg, peakArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
const rate = Number(rateArg);
const peakMb = Number(peakArg || 0);
const OBJ = 8 * 1024 + 200;          // bytes per session, roughly
const t0 = process.hrtime.bigint();
const now = () => Number(process.hrtime.bigint() - t0) / 1e9;

let store = new Map();
let made = 0;
let flushes = 0;
let lastLog = -1;

function session(n) {
  return { id: n, user: `user-${n}-${'x'.repeat(n % 64)}`, scores: new Array(1000).fill(n * 0.5) };
}

function tick() {
  const t = now();
  if (t >= seconds) {
    console.log(`done made=${made} flushes=${flushes}`);
    return;
  }
  const due = Math.floor(t * rate * 1024 * 1024 / OBJ);
  while (made < due) {
    store.set(made, session(made));
    made++;
    if (mode === 'cycle' && store.size * OBJ >= peakMb * 1024 * 1024) {
      store = new Map();
      flushes++;
    }
  }
  if (t - lastLog >= 1) {
    lastLog = t;
    const m = process.memoryUsage();
    console.log(`t=${t.toFixed(1)}s store=${store.size} flushes=${flushes} heapUsed=${m.heapUsed >> 20}MiB ` +
                `heapTotal=${m.heapTotal >> 20}MiB rss=${m.rss >> 20}MiB`);
  }
  setTimeout(tick, 5);
}

tick();
