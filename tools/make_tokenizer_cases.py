#!/usr/bin/env python3
"""Writes tokenizer test fixtures: what HF `tokenizers` gives for a broad set of strings.

For every tokenizer given, writes OUT_DIR/<name>_cases.json:
  {"tokenizer": name, "tokenizers_version": "...",
   "cases": [{"text", "ids", "ids_with_special", "decoded", "decoded_skip_special"}],
   "decode_cases": [{"ids", "skip_special", "text"}]}
where ids = Tokenizer.from_file(...).encode(text, add_special_tokens=False).ids, ids_with_special the same with
add_special_tokens=True (post-processor applied), decoded = decode(ids) and decoded_skip_special =
decode(ids, skip_special_tokens=True). decode_cases are id lists built to split UTF-8 sequences and mix special
tokens in, so the C++ decoder's U+FFFD handling is checked against HF's.

--train-tiny DIR also trains small byte-level BPE tokenizers with HF `tokenizers` (GPT-2 style ByteLevel
pre-tokenizer, added tokens with lstrip/rstrip/single_word/normalized flags, a TemplateProcessing BOS) and two
JSON variants of it (Split regex + ByteLevel with ignore_merges and "a b" merge strings; ByteLevel with
add_prefix_space), saves them under DIR/<name>/tokenizer.json and adds them to the list.

Usage (on a machine with `tokenizers`):
  python3 tools/make_tokenizer_cases.py --tokenizer qwen3=/path/to/qwen3_dir --train-tiny OUT --out-dir OUT
"""
import argparse
import json
import os
import sys

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
import tokenizers


def case_texts():
    """The strings every tokenizer is checked on: one case per kind of thing the pipeline must get right."""
    t = [
        "",
        "Hello world",
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        " leading space",
        "trailing space ",
        "trailing spaces   ",
        "  two leading spaces",
        "multiple   spaces   inside",
        "tab\tseparated\tvalues\t",
        "line1\nline2\n\nline4\n",
        "windows\r\nnewlines\r\n\r\n",
        "   ",
        " ",
        "\n",
        "\n\n\n",
        " \n ",
        "\t\t",
        "word   \n   next",
        "indent:\n    four\n\tand tab\n  \n",
        " " * 300,
        "\n" * 64,
        "a" * 1000,
        "ab" * 300,
        # contractions, both cases, and the long s that case-folds to s
        "I'm you're we've they'll she'd it's don't",
        "I'M YOU'RE WE'VE THEY'LL SHE'D IT'S DON'T",
        "It'S We'Re they'LL",
        "'s 't 're 've 'm 'll 'd",
        "x'ſ and 'ſ",
        "rock 'n' roll, 'quoted'",
        # numbers
        "1234567890",
        "3.14159265358979323846",
        "12,345,678.90",
        "007 and 0.5 and .5",
        "1e10 -42 +7 0x1F",
        "version 2.0.1-rc3",
        "98765432109876543210987654321098765432109876543210",
        "١٢٣ ٤٥٦ (Arabic-Indic digits)",
        "Ⅻ ½ ² ①",
        # accents, precomposed and decomposed (NFC changes the decomposed ones)
        "café naïve résumé",
        "cafe\u0301",
        "e\u0301",
        "A\u030a and \u212b",
        "\u2126 ohm",
        "\u1e9b\u0323",
        "\u1100\u1161\u11a8",
        "o\u0308\u0304",
        "\u0041\u0300\u0316",
        "ﬁ ligature ℌ",
        # scripts
        "你好，世界！",
        "日本語のテキストです。カタカナ、ひらがな。",
        "한국어 문장입니다",
        "中文English混合123文字",
        "Привет, мир! Как дела?",
        "Γειά σου Κόσμε",
        "مرحبا بالعالم",
        "שלום עולם",
        "नमस्ते दुनिया",
        "สวัสดีชาวโลก",
        "ＡＢＣ１２３ full width",
        # emoji
        "😀",
        "😀😀😀",
        "👍🏽",
        "👨‍👩‍👧‍👦 family",
        "🏳️‍🌈",
        "❤️ love",
        "🇺🇸🇯🇵",
        "1\u20e3 keycap",
        "smile😀inside",
        # unicode spaces and controls
        "a\u00a0b",
        "a\u2003b",
        "a\u3000b",
        "a\u200bb",
        "a\u180eb",
        "a\u2028b",
        "a\u0085b",
        "a \u00a0 b",
        "a\x00b",
        "\x07bell",
        "\x1b[31mred\x1b[0m",
        # punctuation and symbols
        "!!!???...",
        "--- *** ___",
        "«quotes» “smart quotes” ‘single’",
        "ellipsis… and — dash",
        "∑_{i=1}^{n} x_i² ≤ ∞",
        "email@example.com https://example.org/path?q=1&r=2#frag",
        "#hashtag @mention $100 50% a&b",
        # code
        "def f(x):\n    return x * 2  # double\n",
        "for (int i = 0; i < n; ++i) {\n  sum += a[i];\n}\n",
        '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}',
        "<div class=\"x\">Hello</div>",
        "cat file.txt | grep -E '^[a-z]+$' > out.txt",
        "    if (x != y && z >= 0) return;",
        "SELECT * FROM users WHERE id = 42;",
        # special and added tokens embedded in text
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        "text<|endoftext|>more text",
        "<|endoftext|><|endoftext|>",
        "< |im_start| > is not special",
        "<|im_start unfinished",
        "<think>\nreasoning here\n</think>\n\nanswer",
        "<tool_call>{\"name\": \"f\"}</tool_call>",
        "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
        " <|im_end|> spaces around ",
        # tokens of the tiny trained tokenizers (plain text for the others)
        "<|bos|>hello<|eos|>",
        "x <|sp_strip|>  y",
        "a  <lstrip>b",
        "a<rstrip>   b",
        "wordtok alone, inwordtok, wordtoks, wordtok!",
        "a café, a cafe\u0301",
        "\u2126 and \u03a9",
        "<x><y> and <x> and <y>",
        "ab cd and ab  cd",
        "zzqx zzqx",
        "<|mask|><|mask|> fill",
    ]
    # A few KB of mixed text, built deterministically from the cases above.
    parts = []
    i = 0
    while sum(len(p) for p in parts) < 4000:
        parts.append(t[(i * 7) % len(t)])
        parts.append(" Lorem ipsum dolor sit amet, consectetur adipiscing elit %d.\n" % (i * 37 % 1000))
        i += 1
    t.append("".join(parts))
    return t


# Byte sequences decoded through the byte-level alphabet: truncated, overlong, surrogate and out-of-range
# UTF-8, so the replacement-character handling is compared with HF (Rust's from_utf8_lossy).
DECODE_BYTES = [
    b"\xf0\x9f\x98",
    b"\xf0\x9f\x98\x80",
    b"\xe2\x82x",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
    b"\xff\xfe",
    b"a\x80b",
    b"\xc3",
    b"\xc3\x28",
    b"\xf1\x80\x80\xe1\x80\xc2",
    b"\xe2\x82\xac",
]


def byte_level_chars():
    """GPT-2's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def decode_cases(tok):
    out = []
    table = byte_level_chars()
    ids_of = {b: tok.token_to_id(c) for b, c in table.items()}
    if all(v is not None for v in ids_of.values()):
        for seq in DECODE_BYTES:
            ids = [ids_of[b] for b in seq]
            out.append({"ids": ids, "skip_special": False, "text": tok.decode(ids, skip_special_tokens=False)})
    # Added tokens (special or not) between byte tokens that split a character.
    vocab = tok.get_added_tokens_decoder()
    for tid, added in sorted(vocab.items()):
        pre = [ids_of[0xF0], ids_of[0x9F]] if ids_of.get(0xF0) is not None else []
        post = [ids_of[0x98], ids_of[0x80]] if ids_of.get(0x98) is not None else []
        hello = tok.encode("hello", add_special_tokens=False).ids
        ids = pre + [tid] + post + hello + [tid]
        for skip in (False, True):
            out.append({"ids": ids, "skip_special": skip, "text": tok.decode(ids, skip_special_tokens=skip)})
    return out


def make_cases(name, path, out_dir):
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    tok = Tokenizer.from_file(file)
    cases = []
    for text in case_texts():
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({
            "text": text,
            "ids": ids,
            "ids_with_special": tok.encode(text, add_special_tokens=True).ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    doc = {"tokenizer": name, "tokenizers_version": tokenizers.__version__}
    out = os.path.join(out_dir, name + "_cases.json")
    with open(out, "w", encoding="utf-8") as f:
        # One case per line keeps the committed file readable and its diffs small.
        f.write("{\n")
        for k, v in doc.items():
            f.write("%s: %s,\n" % (json.dumps(k), json.dumps(v)))
        for key, rows in (("cases", cases), ("decode_cases", decode_cases(tok))):
            f.write("%s: [\n" % json.dumps(key))
            f.write(",\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
            f.write("\n]%s\n" % ("," if key == "cases" else ""))
        f.write("}\n")
    print("%s: %d cases -> %s" % (name, len(cases), out))


TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Hello world, hello there!",
    "It's a tokenizer test: don't panic, we'll see what they've done and I'm sure you'd agree.",
    "def hello(name):\n    return 'hello ' + name\n\nfor i in range(10):\n    print(hello(str(i)))\n",
    "Numbers like 1234567890 and 3.14159 appear; so do café, naïve, résumé and 你好世界.",
    "Emoji 😀 and 👍 are bytes too. Tabs\tand\nnewlines\r\n matter.",
] * 20


def train_tiny(out_dir):
    """Trains a small byte-level BPE and saves it plus two JSON variants; returns [(name, dir)]."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|bos|>", "<|eos|>", "<|mask|>"])
    tok.train_from_iterator(TINY_CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", 0)])
    tok.add_special_tokens([AddedToken("<|sp_strip|>", lstrip=True, rstrip=True, normalized=False)])
    tok.add_tokens([
        AddedToken("<lstrip>", lstrip=True, normalized=False),
        AddedToken("<rstrip>", rstrip=True, normalized=False),
        AddedToken("wordtok", single_word=True, normalized=False),
        AddedToken("café", normalized=True),
        AddedToken("\u2126", normalized=True),
        AddedToken("<x>", normalized=False),
        AddedToken("<x><y>", normalized=False),
        AddedToken("ab cd", normalized=False),
    ])
    result = []
    base = json.loads(tok.to_str())

    def save(name, j):
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False, indent=1)
        Tokenizer.from_file(os.path.join(d, "tokenizer.json"))  # HF must accept what we wrote
        result.append((name, d))

    save("tiny_bytelevel", base)

    # Variant: Qwen/Llama-3 style Split regex + ByteLevel without regex, no normalizer, merges as "a b" strings,
    # ignore_merges with a vocab word that no merge builds. That extra vocab entry also makes the added tokens'
    # ids in the file inconsistent: HF then assigns them its own ids (model vocab size onwards), which the
    # fixture records and the C++ loader must reproduce.
    v = json.loads(json.dumps(base))
    v["normalizer"] = None
    v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex":
            "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
            "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    v["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    v["model"]["ignore_merges"] = True
    v["model"]["merges"] = [m if isinstance(m, str) else m[0] + " " + m[1] for m in v["model"]["merges"]]
    top = max(max(v["model"]["vocab"].values()), max(a["id"] for a in v["added_tokens"]))
    v["model"]["vocab"]["zzqx"] = top + 1
    save("tiny_split", v)

    # Variant: ByteLevel pre-tokenizer that prepends a space.
    p = json.loads(json.dumps(base))
    p["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    save("tiny_prefix", p)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", action="append", default=[],
                    help="NAME=PATH (a tokenizer.json or a directory holding one); repeatable")
    ap.add_argument("--train-tiny", metavar="DIR", help="also train the tiny tokenizers into DIR and use them")
    ap.add_argument("--out-dir", required=True, help="where <name>_cases.json files go")
    args = ap.parse_args()
    todo = []
    for spec in args.tokenizer:
        name, _, path = spec.partition("=")
        if not path:
            path, name = name, os.path.basename(os.path.normpath(name))
        todo.append((name, path))
    if args.train_tiny:
        todo += train_tiny(args.train_tiny)
    if not todo:
        sys.exit("no tokenizer given (--tokenizer NAME=PATH or --train-tiny DIR)")
    os.makedirs(args.out_dir, exist_ok=True)
    print("tokenizers", tokenizers.__version__)
    for name, path in todo:
        make_cases(name, path, args.out_dir)


if __name__ == "__main__":
    main()
