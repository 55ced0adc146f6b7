#!/usr/bin/python3
"""Reference fixture for the SentencePiece tokenizer: trains a tiny unigram model with Debian's
python3-sentencepiece on a fixed text, and records how that library encodes a few strings.

    /usr/bin/python3 tests/reference/make_tokenizer_fixtures.py tests/fixtures/tokenizer
"""
import io
import json
import os
import sys

import sentencepiece as spm

TEXT = """the quick brown fox jumps over the lazy dog
add 12+30 = 42; sort 3 1 2 = 1 2 3; reverse abc = cba
mixture of experts models route every token to a few experts
upcycling copies the dense feed forward network into each expert
""" * 20

PROBES = ["the quick brown fox", "add 12+30 = 42", "experts route tokens", "Zebra!"]


def main(out):
    os.makedirs(out, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXT.splitlines()), model_writer=model,
                                   vocab_size=64, model_type="unigram", bos_id=1, eos_id=2, unk_id=0,
                                   pad_id=3, character_coverage=1.0, num_threads=1)
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    expected = {"vocab_size": sp.get_piece_size(), "bos": sp.bos_id(), "eos": sp.eos_id(), "pad": sp.pad_id(),
                "encodings": [{"text": t, "ids": sp.encode(t), "decoded": sp.decode(sp.encode(t))} for t in PROBES]}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(json.dumps(expected)[:300])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/tokenizer")
