// The peer of `upcycle bench tokenize`: the Hugging Face tokenizers library (Rust, through its Node
// bindings, npm package `tokenizers`) encoding the same text file, line by line, without special
// tokens, on one thread. Run by bench/tokenize_vs_hf.sh, which sets RAYON_NUM_THREADS=1 and
// TOKENIZERS_PARALLELISM=false.
//
//   node bench/tokenize_vs_hf.js NODE_MODULES TOKENIZER_JSON TEXT_FILE [PASSES] [batch|line]
//
// Prints one JSON object: load seconds (Tokenizer.fromFile), the seconds of each pass over the
// lines, the total token count and the sum of all ids (the latter from a separate, untimed pass:
// both are compared with ours).
//
// Modes. `batch` (the default) hands the lines to encodeBatch in chunks of 1024; with parallelism
// off the library encodes them one after another on one thread, each line its own sequence exactly
// as encode would, so this measures the Rust library with the Node call overhead spread over 1024
// lines. `line` awaits encode once per line: every call then also pays a hop to libuv's thread pool
// and back, which is the bindings' cost, not the library's.
//
//   node bench/tokenize_vs_hf.js --summarize RESULTS.jsonl
//
// Reads the runs the shell script collected (one JSON object per line, both sides, every round) and
// prints the table: per tokenizer the median over rounds of each side's MB/s, the median of the
// per-round ratios ours/HF (of the median passes; "cold": of the first passes, word caches empty),
// load times, and whether the token counts and id sums agree. Exits 1 when they do not.
'use strict';
const fs = require('fs');
const path = require('path');

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

function summarize(file) {
  const runs = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  const names = [...new Set(runs.map((r) => r.name))];
  const rows = [], mismatches = [];
  for (const name of names) {
    const mine = runs.filter((r) => r.name === name);
    const rounds = [...new Set(mine.map((r) => r.round))];
    const ratio = [], cold = [], oursMb = [], hfMb = [], oursLoad = [], hfLoad = [];
    let same = true, tokens = null;
    for (const round of rounds) {
      const o = mine.find((r) => r.round === round && r.side === 'ours');
      const h = mine.find((r) => r.round === round && r.side === 'hf');
      if (!o || !h) continue;
      const os = median(o.pass_seconds), hs = median(h.pass_seconds);
      ratio.push(hs / os);
      cold.push(h.pass_seconds[0] / o.pass_seconds[0]);
      oursMb.push(o.bytes / 1e6 / os);
      hfMb.push(h.bytes / 1e6 / hs);
      oursLoad.push(o.load_seconds);
      hfLoad.push(h.load_seconds);
      if (o.tokens !== h.tokens || o.id_sum !== h.id_sum || o.bytes !== h.bytes || o.lines !== h.lines) {
        same = false;
        mismatches.push(`${name} round ${round}: ours ${o.tokens} tokens (id sum ${o.id_sum}, ${o.lines} lines), ` +
                        `HF ${h.tokens} tokens (id sum ${h.id_sum}, ${h.lines} lines)`);
      }
      tokens = o.tokens;
    }
    rows.push({name, rounds: ratio.length, oursMb: median(oursMb), hfMb: median(hfMb), ratio: median(ratio),
               ratioMin: Math.min(...ratio), ratioMax: Math.max(...ratio), cold: median(cold),
               oursLoad: median(oursLoad), hfLoad: median(hfLoad), tokens, same});
  }
  const f = (x, d) => x.toFixed(d);
  console.log('| tokenizer | ours MB/s | HF MB/s | ours/HF (median, min-max) | cold first pass ours/HF | ' +
              'load ours / HF s | tokens | same tokens |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows)
    console.log(`| ${r.name} | ${f(r.oursMb, 2)} | ${f(r.hfMb, 2)} | ${f(r.ratio, 2)} (${f(r.ratioMin, 2)}-${f(r.ratioMax, 2)}, ` +
                `${r.rounds} rounds) | ${f(r.cold, 2)} | ${f(r.oursLoad, 2)} / ${f(r.hfLoad, 2)} | ${r.tokens} | ` +
                `${r.same ? 'yes' : 'NO'} |`);
  if (mismatches.length) {
    console.error('\n!!!!! OURS AND HF PRODUCED DIFFERENT TOKENS !!!!!');
    for (const m of mismatches) console.error('!!! ' + m);
    process.exit(1);
  }
}

// Encodes the file as described at the top.
function peer() {
  const [modules, tokenizerJson, textFile, passesArg, modeArg] = process.argv.slice(2);
  if (!modules || !tokenizerJson || !textFile) {
    console.error('usage: node tokenize_vs_hf.js NODE_MODULES TOKENIZER_JSON TEXT_FILE [PASSES] [batch|line]');
    process.exit(2);
  }
  const passes = Number(passesArg || 3);
  const mode = modeArg || 'batch';
  if (mode !== 'batch' && mode !== 'line') throw new Error(`mode must be batch or line, not ${mode}`);
  const {Tokenizer} = require(path.join(modules, 'tokenizers'));

  // Lines as ours reads them: split on \n, a trailing newline ends the last line.
  const text = fs.readFileSync(textFile, 'utf8');
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  const bytes = Buffer.byteLength(text, 'utf8');
  const kChunk = 1024;
  const opts = {addSpecialTokens: false};

  async function encodeAll(withIds) {
    let tokens = 0, idSum = 0;
    const take = (e) => {
      tokens += e.getLength();
      if (withIds) for (const id of e.getIds()) idSum += id;
    };
    if (mode === 'batch') {
      for (let i = 0; i < lines.length; i += kChunk)
        for (const e of await tok.encodeBatch(lines.slice(i, i + kChunk), opts)) take(e);
    } else {
      for (const line of lines) take(await tok.encode(line, null, opts));
    }
    return {tokens, idSum};
  }

  const t0 = process.hrtime.bigint();
  const tok = Tokenizer.fromFile(tokenizerJson);
  const loadSeconds = Number(process.hrtime.bigint() - t0) / 1e9;

  (async () => {
    const passSeconds = [];
    let tokens = 0;
    for (let p = 0; p < passes; ++p) {
      const s = process.hrtime.bigint();
      tokens = (await encodeAll(false)).tokens;
      passSeconds.push(Number(process.hrtime.bigint() - s) / 1e9);
    }
    const check = await encodeAll(true);
    if (check.tokens !== tokens) throw new Error('token count changed between passes');
    console.log(JSON.stringify({
      peer: 'tokenizers ' + require(path.join(modules, 'tokenizers', 'package.json')).version + ' (Node, ' + mode + ')',
      load_seconds: loadSeconds, bytes, lines: lines.length, tokens, id_sum: check.idSum, pass_seconds: passSeconds,
    }));
  })().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

if (process.argv[2] === '--summarize') summarize(process.argv[3]);
else peer();
