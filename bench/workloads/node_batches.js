// Node.js batch job: each batch's records pile up on the heap, then are released.
//
// usage: node --max-old-space-size=N node_batches.js SECONDS RECORDS_PER_S BATCH_SECONDS GROWTH
//
// Paced on process.hrtime in 100 ms ticks, the job "receives" RECORDS_PER_S
// records a second (objects with a few numbers, a short string and a small
// array, ~200-300 bytes each on the V8 heap, built from a seeded xorshift),
// keeps them in the current batch's array, and every BATCH_SECONDS closes the
// batch: it aggregates it (a Map of per-key sums), logs, and drops the
// array, so the next collection frees it (V8 then shrinks its heap in its
// own time).  Each batch's rate is the previous one's times GROWTH (e.g.
// 1.08: traffic growing day to day), so the teeth grow; GROWTH 1 keeps them
// alike.  The curve: long teeth of BATCH_SECONDS, each a climb then a drop.
'use strict';
const [seconds, rate, batchSeconds, growth] = process.argv.slice(2).map(Number);
let s = 1n;
function rnd() {  // xorshift64, seed 1
  s ^= (s << 13n) & 0xffffffffffffffffn; s ^= s >> 7n; s ^= (s << 17n) & 0xffffffffffffffffn;
  return Number(s & 0xfffffffn) / 0x10000000;
}
const t0 = process.hrtime.bigint();
const now = () => Number(process.hrtime.bigint() - t0) / 1e9;
let batch = [];
let batchNo = 0;
let batchRate = rate;
let batchStart = 0;
let tick = 0;
function closeBatch() {
  const agg = new Map();
  for (const r of batch) agg.set(r.key, (agg.get(r.key) || 0) + r.v[0]);
  const mem = process.memoryUsage();
  console.log(`${now().toFixed(1)}s batch ${batchNo} records ${batch.length} keys ${agg.size} ` +
              `heapUsed ${(mem.heapUsed / 1048576).toFixed(0)} MiB rss ${(mem.rss / 1048576).toFixed(0)} MiB`);
  batch = [];
  batchNo++;
  batchRate *= growth;
}
function step() {
  const t = now();
  if (t >= seconds) { closeBatch(); console.log('done'); return; }
  if (t - batchStart >= batchSeconds) { closeBatch(); batchStart += batchSeconds; }
  const n = Math.round(batchRate / 10);
  for (let i = 0; i < n; i++) {
    const k = Math.floor(rnd() * 50000);
    batch.push({ key: 'k' + k, ts: t, v: [rnd(), rnd(), rnd(), rnd()], tag: 'evt-' + Math.floor(rnd() * 1e6) });
  }
  tick++;
  const due = tick * 0.1;
  setTimeout(step, Math.max(0, (due - now()) * 1000));
}
step();
