// Node.js map-tile server cache whose tiles grow with the zoom level.
//
// usage: node node_tilecache.js SECONDS REQ_PER_S CAPACITY STAGE_SECONDS KIB0 KIB_STEP
//   e.g. node bench/workloads/node_tilecache.js 60 400 3000 12 32 24
//
// Paced on process.hrtime in 100 ms ticks, the server "renders" REQ_PER_S
// tiles a second and keeps each rendered tile (a Buffer, filled from a
// seeded xorshift, so its pages are really written; Buffers live outside
// the V8 heap, so --max-old-space-size does not bound them) in an LRU cache
// (a Map in insertion order) that evicts by COUNT, at most CAPACITY tiles.
// Requests follow the users: every STAGE_SECONDS they zoom in one level and
// the tiles get KIB_STEP KiB larger (KIB0 KiB at first), and 30 % of the
// requests are cache hits on recent tiles.  The cache's bytes therefore
// climb in stages: each stage replaces the smaller tiles by larger ones
// over CAPACITY / (0.7 x REQ_PER_S) seconds, then holds, until the next
// zoom.  Evicted Buffers are freed when V8 collects them (external memory
// pressure triggers it), so the curve has a small sawtooth on the stages.
// Nothing is written to disk.
'use strict';
const [seconds, rate, capacity, stageSeconds, kib0, kibStep] = process.argv.slice(2).map(Number);
let s = 88172645463325252n;
function rnd() {  // xorshift64, fixed seed
  s ^= (s << 13n) & 0xffffffffffffffffn; s ^= s >> 7n; s ^= (s << 17n) & 0xffffffffffffffffn;
  return Number(s & 0xfffffffn) / 0x10000000;
}
const cache = new Map();
const t0 = process.hrtime.bigint();
const now = () => Number(process.hrtime.bigint() - t0) / 1e9;
let tick = 0, owed = 0, rendered = 0, hits = 0, nextLog = 5;
const recent = [];
function render(zoom, x, y, kib) {
  const b = Buffer.allocUnsafe(kib * 1024);
  let v = (zoom * 73856093) ^ (x * 19349663) ^ (y * 83492791) ^ Math.floor(rnd() * 0x7fffffff);
  for (let i = 0; i < b.length; i += 4) { v = (v * 1103515245 + 12345) | 0; b.writeInt32LE(v, i); }
  return b;
}
function step() {
  const t = tick * 0.1;
  if (t >= seconds) { console.log(`done t=${t.toFixed(1)} rendered=${rendered} hits=${hits} cached=${cache.size}`); return; }
  const zoom = Math.floor(t / stageSeconds);
  const kib = kib0 + kibStep * zoom;
  owed += rate * 0.1;
  while (owed >= 1) {
    owed -= 1;
    if (recent.length > 0 && rnd() < 0.3) {
      const key = recent[Math.floor(rnd() * recent.length)];
      const b = cache.get(key);
      if (b) { cache.delete(key); cache.set(key, b); hits++; continue; }
    }
    const x = Math.floor(rnd() * (1 << (zoom + 8))), y = Math.floor(rnd() * (1 << (zoom + 8)));
    const key = `${zoom}/${x}/${y}`;
    cache.set(key, render(zoom, x, y, kib));
    rendered++;
    recent.push(key); if (recent.length > 200) recent.shift();
    while (cache.size > capacity) cache.delete(cache.keys().next().value);
  }
  if (t >= nextLog) {
    let bytes = 0; for (const b of cache.values()) bytes += b.length;
    console.log(`t=${t.toFixed(1)} zoom=${zoom} tile=${kib}KiB cached=${cache.size} ${(bytes / 1048576).toFixed(0)}MiB`);
    nextLog += 5;
  }
  tick++;
  const wait = tick * 0.1 - now();
  setTimeout(step, Math.max(0, wait * 1000));
}
step();
