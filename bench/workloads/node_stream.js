// Node.js stream pipeline whose producer ignores backpressure.
//
// usage: node node_stream.js SECONDS PRODUCE_MIBPS SINK_MIBPS [DRAIN_S]
//   e.g. node bench/workloads/node_stream.js 70 9 5 60
//
// An export job: for SECONDS seconds, paced on process.hrtime in 100 ms
// ticks, it formats PRODUCE_MIBPS MiB/s of JSON lines (records from a seeded
// xorshift: an id, a timestamp, a user, a few numbers and a short text),
// gathers them into ~64 KiB Buffers and writes each into a Transform that
// gzips nothing but checksums and re-frames (a Transform with objectMode
// off), piped into a Writable "upload" sink that accepts SINK_MIBPS MiB/s
// (its _write hashes the chunk with sha1 and calls back after the time the
// bytes take at that rate).  The producer calls write() and ignores its
// return value (no 'drain' wait): what the sink cannot take piles up in the
// Transform's and the Writable's buffers, Buffers outside the V8 heap
// (external memory, not bounded by --max-old-space-size).  After SECONDS the
// producer ends the stream and the process waits until the sink has taken
// everything, or DRAIN_S more seconds, then exits.
//
// The curve: a climb at (PRODUCE - SINK) MiB/s (plus a little V8 heap), then,
// once the producer stops, a slow fall as the sink drains the backlog and
// the collector frees the written Buffers.  A long enough production run
// passes the limit.
'use strict';
const { Transform, Writable } = require('stream');
const crypto = require('crypto');
const [seconds, produce, sinkRate, drainS] = process.argv.slice(2).map(Number);
const MiB = 1048576;
let s = 1n;
function rnd() {  // xorshift64, seed 1
  s ^= (s << 13n) & 0xffffffffffffffffn; s ^= s >> 7n; s ^= (s << 17n) & 0xffffffffffffffffn;
  return Number(s & 0xfffffffn) / 0x10000000;
}
const t0 = process.hrtime.bigint();
const now = () => Number(process.hrtime.bigint() - t0) / 1e9;
let written = 0, sunk = 0, crc = 0;
const frame = new Transform({
  transform(chunk, enc, cb) {
    for (let i = 0; i < chunk.length; i += 4096) crc = (crc * 31 + chunk[i]) >>> 0;
    cb(null, chunk);
  },
});
const sink = new Writable({
  highWaterMark: 1 << 20,
  write(chunk, enc, cb) {
    crypto.createHash('sha1').update(chunk).digest();
    sunk += chunk.length;
    setTimeout(cb, chunk.length / (sinkRate * MiB) * 1000);
  },
});
frame.pipe(sink);
let id = 0;
function line() {
  id++;
  const r = rnd();
  return JSON.stringify({
    id, ts: 1765000000000 + id * 7, user: 'u' + Math.floor(r * 500000),
    amount: Math.round(rnd() * 100000) / 100, items: [Math.floor(rnd() * 9), Math.floor(rnd() * 99)],
    note: 'order ' + id.toString(36) + ' via ' + (r < 0.5 ? 'web' : 'mobile') + ' ' + 'x'.repeat(Math.floor(rnd() * 60)),
  }) + '\n';
}
let tick = 0;
let owed = 0;
let pending = [];
let pendingLen = 0;
function step() {
  const t = now();
  if (t >= seconds) {
    console.log(`${t.toFixed(1)}s producer done: ${(written / MiB).toFixed(0)} MiB written, ` +
                `${(sunk / MiB).toFixed(0)} MiB sunk`);
    frame.end();
    return;
  }
  owed += produce * MiB * 0.1;
  while (owed > 0) {
    const l = line();
    pending.push(l);
    pendingLen += l.length;
    owed -= l.length;
    if (pendingLen >= 65536) {
      const buf = Buffer.from(pending.join(''));
      pending = [];
      pendingLen = 0;
      frame.write(buf);  // return value ignored: no backpressure
      written += buf.length;
    }
  }
  tick++;
  if (tick % 50 === 0) {
    const m = process.memoryUsage();
    console.log(`${t.toFixed(1)}s written ${(written / MiB).toFixed(0)} MiB sunk ${(sunk / MiB).toFixed(0)} MiB ` +
                `buffered ${((frame.writableLength + sink.writableLength) / MiB).toFixed(0)} MiB ` +
                `external ${(m.external / MiB).toFixed(0)} MiB heap ${(m.heapUsed / MiB).toFixed(0)} MiB`);
  }
  const next = tick * 0.1 - now();
  setTimeout(step, Math.max(0, next * 1000));
}
sink.on('finish', () => {
  console.log(`${now().toFixed(1)}s sink finished: ${(sunk / MiB).toFixed(0)} MiB, crc ${crc}`);
  process.exit(0);
});
setTimeout(() => {
  console.log(`${now().toFixed(1)}s drain time over, ${((written - sunk) / MiB).toFixed(0)} MiB not sunk`);
  process.exit(0);
}, (seconds + (drainS || 60)) * 1000).unref();
step();
