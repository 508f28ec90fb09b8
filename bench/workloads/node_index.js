// A Node.js streaming parser building an in-memory inverted index whose growth slows down.
//
//   node --max-old-space-size=<MiB> bench/workloads/node_index.js SECONDS DOCS_PER_S VOCAB [CAP] [SEED]
//
// A log-search service indexes a stream of text documents as they arrive.
// The stream is a Readable (object mode off: real text chunks of ~64 KiB)
// fed by a paced generator: DOCS_PER_S documents a second, each one line of
// 40 tokens.  Tokens are drawn log-uniformly from a vocabulary of VOCAB
// terms (rank r = floor(VOCAB^u), u uniform: roughly Zipf, s = 1), so the
// common terms repeat at once and new terms keep turning up ever more
// rarely (Heaps' law).  A Transform splits the chunks into lines (keeping
// the partial last line for the next chunk) and the index consumer
// tokenizes each line and adds the document id to each term's postings in
// a Map<string, number[]>; a term keeps at most CAP (default 6) postings
// (the most recent ones: a "where was this last seen" index).
//
// So the heap is mostly the vocabulary seen so far: a climb that is steep
// at first and bends over (the distinct-term count grows ever slower),
// under a fine sawtooth from the collector reclaiming the parsed lines and
// token strings.  Each term costs roughly a Map entry, a short string and
// a small array (~270-290 bytes of RSS a term, measured).  With a large enough limit the
// climb flattens well under it; with a small one the OOM killer (or V8 at
// --max-old-space-size) ends it.
//
// Seeded (a xorshift generator, SEED default 1); prints documents, terms
// and heap figures every second; runs SECONDS.
'use strict';

const { Readable, Transform, Writable } = require('stream');

const [secondsArg, rateArg, vocabArg, capArg, seedArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 120);
const rate = Number(rateArg || 2000);
const vocab = Number(vocabArg || 20000000);
const cap = Number(capArg || 6);
let seed = (Number(seedArg || 1) >>> 0) || 1;
const TOKENS = 40;

function rnd() {                 // xorshift32, [0, 1)
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed / 4294967296;
}

const t0 = process.hrtime.bigint();
const now = () => Number(process.hrtime.bigint() - t0) / 1e9;
const logV = Math.log(vocab);

let produced = 0;
const source = new Readable({
  read() { fill(this); },
});

function fill(stream) {
    const t = now();
    if (t >= seconds) { stream.push(null); return; }
    const due = Math.floor(t * rate);
    if (produced >= due) {       // paced: come back when more documents are due
      setTimeout(() => fill(stream), 10);
      return;
    }
    const lines = [];
    let bytes = 0;
    while (produced < due && bytes < 65536) {
      const toks = new Array(TOKENS);
      for (let i = 0; i < TOKENS; i++) {
        const r = Math.floor(Math.exp(rnd() * logV));
        toks[i] = 'w' + r.toString(36);
      }
      const line = `${produced}\t${Date.now()}\t${toks.join(' ')}`;
      lines.push(line);
      bytes += line.length + 1;
      produced++;
    }
    stream.push(lines.join('\n') + '\n');
}

let tail = '';
const splitter = new Transform({
  readableObjectMode: true,
  transform(chunk, _enc, cb) {
    const text = tail + chunk.toString('utf8');
    const parts = text.split('\n');
    tail = parts.pop();
    cb(null, parts);
  },
});

const index = new Map();
let docs = 0;
let postings = 0;
const sink = new Writable({
  objectMode: true,
  write(lines, _enc, cb) {
    for (const line of lines) {
      const tab1 = line.indexOf('\t');
      const tab2 = line.indexOf('\t', tab1 + 1);
      const id = Number(line.slice(0, tab1));
      for (const term of line.slice(tab2 + 1).split(' ')) {
        let list = index.get(term);
        if (list === undefined) {
          list = [];
          index.set(term, list);
        }
        if (list.length >= cap) list.shift(); else postings++;
        list.push(id);
      }
      docs++;
    }
    cb();
  },
});

let lastLog = 0;
const timer = setInterval(() => {
  const t = now();
  if (t - lastLog >= 1) {
    lastLog = t;
    const m = process.memoryUsage();
    console.log(`t=${t.toFixed(1)}s docs=${docs} terms=${index.size} postings=${postings} ` +
                `heapUsed=${m.heapUsed >> 20}MiB heapTotal=${m.heapTotal >> 20}MiB rss=${m.rss >> 20}MiB`);
  }
}, 250);

source.pipe(splitter).pipe(sink).on('finish', () => {
  clearInterval(timer);
  console.log(`done docs=${docs} terms=${index.size} postings=${postings}`);
});
