#!/usr/bin/env python3
"""Golden fixtures for the block-diffusion models (SDAR, Fast-dLLM v2): tiny random checkpoints and their logits.

Run on the device machine (the only one with torch and transformers), on its CPU:

    python3 tools/make_block_fixtures.py --out $OUT/fixtures

It writes two fixture directories next to the ones tools/make_fixtures.py makes:

  sdar_tiny          Qwen3 layout (q/k RMSNorm, no q/k/v bias), config.json in the style of SDAR-8B-Chat
                     (model_type "sdar", block_size, mask_token_id); reference from Qwen3ForCausalLM
  fast_dllm_v2_tiny  Qwen2.5 layout (q/k/v bias), config.json in the style of Fast_dLLM_v2_7B
                     (model_type "Fast_dLLM_Qwen", bd_size); reference from Qwen2ForCausalLM

Each reference.safetensors holds
  input_ids  I64 [2, 12]      random ids with a few mask tokens (no padding: block models decode rows alone)
  logits     F32 [2, 12, V]   the raw logits with the BLOCK-CAUSAL 4D mask: query i attends key j iff
                              j // block_size <= i // block_size (bidirectional inside a block, causal between)
  decode_prompt_<k>, decode_out_<k>  I64 [n]: greedy block-diffusion decodes (docs/BLOCK_DIFFUSION.md), the
                              reference decoder below, run with full block-causal forwards (no cache), so the
                              engine's cached decoder is checked against an uncached transcription
and the decoding parameters in the safetensors metadata. The script checks that transformers honours the mask
(changing a token of the last block leaves the earlier blocks' logits unchanged, and changes its own block's).
"""
import argparse
import json
import math
import os
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import build_hf, normal, qwen2_config, random_weights, write_json  # noqa: E402

DIMS = dict(hidden=64, inter=160, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=320, theta=1.0e6, eps=1e-6)
IDS = dict(bos=316, eos=318, pad=318, mask=319)
BLOCK = 4
NB, NL = 2, 12  # logits input: 2 rows of 3 blocks

# Decoding cases: (prompt length, new tokens). 6 % 4 != 0: the first block holds prompt tokens; 8 % 4 == 0:
# Fast-dLLM v2 fills the first new position from the prefill's last logits.
DECODE_CASES = [(6, 10), (8, 9)]
SDAR_DECODE = dict(steps=2, threshold=0.12, sub_block=0)
FAST_DECODE = dict(steps=0, threshold=0.12, sub_block=2)


MASK_STYLE = ["additive"]  # the 4D mask convention transformers takes; check_mask_semantics settles it


def block_mask(n, block):
    """[1, 1, n, n] mask, key block <= query block: 'additive' 0 / finfo.min (transformers >= 4.40), or 'bool'."""
    blk = torch.arange(n) // block
    ok = blk[None, :] <= blk[:, None]
    if MASK_STYLE[0] == "bool":
        return ok[None, None]
    m = torch.zeros(n, n, dtype=torch.float32).masked_fill(~ok, torch.finfo(torch.float32).min)
    return m[None, None]


def logits_of(model, ids, block):
    B, L = ids.shape
    pos = torch.arange(L, dtype=torch.int64)[None, :].repeat(B, 1)
    mask = block_mask(L, block).expand(B, 1, L, L).contiguous()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits.to(torch.float32)


def check_mask_semantics(model, ids, block, stats):
    for style in ("additive", "bool"):
        MASK_STYLE[0] = style
        try:
            return check_mask_style(model, ids, block, stats)
        except AssertionError as e:
            print(f"mask style {style}: {e}")
    raise AssertionError("no 4D mask style gives block-causal attention")


def check_mask_style(model, ids, block, stats):
    base = logits_of(model, ids, block)
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % DIMS["vocab"]
    other = logits_of(model, changed, block)
    L = ids.shape[1]
    before = (other[:, : L - block] - base[:, : L - block]).abs().max().item()
    inside = (other[:, L - block] - base[:, L - block]).abs().max().item()  # the block's FIRST query
    assert before == 0.0, f"a later block changed earlier logits by {before}: the block-causal mask is not honoured"
    assert inside > 1e-3, f"the last block's own logits did not change ({inside}): attention is not bidirectional"
    stats["mask_inside_change"] = inside
    stats["mask_style"] = MASK_STYLE[0]
    return base


def reference_decode(model, prompt, new_tokens, shift, p):
    """Greedy block-diffusion decoding, transcribed from the public decoders (docs/BLOCK_DIFFUSION.md); every
    step is a full block-causal forward over the sequence up to the current block's end (no cache)."""
    bs, mask = BLOCK, IDS["mask"]
    P = len(prompt)
    L = (P + new_tokens + bs - 1) // bs * bs
    x = torch.full((L,), mask, dtype=torch.int64)
    x[:P] = torch.tensor(prompt)

    def step_logits(end):
        return logits_of(model, x[None, :end], bs)[0]

    def choose(logits_rows):
        lg = logits_rows.clone()
        lg[:, mask] = -float("inf")  # the mask token is never proposed (Diffulex's forbidden_token_ids)
        probs = torch.softmax(lg.to(torch.float64), dim=-1)
        conf, tok = probs.max(dim=-1)
        return tok, conf

    if shift and P % bs == 0:
        tok, _ = choose(step_logits(P)[P - 1: P])
        x[P] = tok[0]
    steps_total = 0
    for blk in range(P // bs, L // bs):
        s, e = blk * bs, blk * bs + bs
        sb = p["sub_block"] or bs
        step = 0
        for a in range(s, e, sb):
            b = a + sb
            while bool((x[a:b] == mask).any()):
                lg = step_logits(e)
                masked = [l for l in range(a, b) if int(x[l]) == mask]
                rows = torch.tensor([l - shift for l in masked])
                assert int(rows.min()) >= s, "a shifted row left the block"
                tok, conf = choose(lg[rows])
                above = [i for i in range(len(masked)) if float(conf[i]) > p["threshold"]]
                if p["steps"] > 0:
                    base, rem = divmod(bs, p["steps"])
                    n = (base + (1 if step < rem else 0)) if step < p["steps"] else len(masked)
                    n = min(n, len(masked))
                else:
                    n = 1
                if len(above) >= n:
                    pick = above
                else:  # the n most confident (ties: lower position)
                    order = sorted(range(len(masked)), key=lambda i: (-float(conf[i]), masked[i]))
                    pick = order[:n]
                for i in pick:
                    x[masked[i]] = tok[i]
                step += 1
                steps_total += 1
        if shift and e < L:
            tok, _ = choose(step_logits(e)[e - 1: e])
            x[e] = tok[0]
    return x[: P + new_tokens], steps_total


def make(root, name, seed, qwen3):
    d = DIMS
    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    w = random_weights(gen, d, qkv_bias=not qwen3)
    if qwen3:
        for i in range(d["layers"]):
            p = f"model.layers.{i}.self_attn."
            w[p + "q_norm.weight"] = 1.0 + normal(gen, (d["head_dim"],), 0.1)
            w[p + "k_norm.weight"] = 1.0 + normal(gen, (d["head_dim"],), 0.1)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sorted(w.items())},
              os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    common = {
        "attention_dropout": 0.0, "bos_token_id": IDS["bos"], "eos_token_id": IDS["eos"],
        "pad_token_id": IDS["pad"], "mask_token_id": IDS["mask"], "hidden_act": "silu", "hidden_size": d["hidden"],
        "initializer_range": 0.02, "intermediate_size": d["inter"], "max_position_embeddings": 128,
        "max_window_layers": d["layers"], "num_attention_heads": d["heads"], "num_hidden_layers": d["layers"],
        "num_key_value_heads": d["kv_heads"], "rms_norm_eps": d["eps"], "rope_scaling": None,
        "rope_theta": d["theta"], "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": transformers.__version__, "use_sliding_window": False, "vocab_size": d["vocab"],
    }
    if qwen3:  # as SDAR-8B-Chat's config.json
        cfg_json = dict(common, architectures=["SDARForCausalLM"], model_type="sdar", block_size=BLOCK,
                        head_dim=d["head_dim"], attention_bias=False, use_cache=False,
                        auto_map={"AutoConfig": "configuration_sdar.SDARConfig",
                                  "AutoModel": "modeling_sdar.SDARModel",
                                  "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"})
        hf_cfg = Qwen3Config(vocab_size=d["vocab"], hidden_size=d["hidden"], intermediate_size=d["inter"],
                             num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
                             num_key_value_heads=d["kv_heads"], head_dim=d["head_dim"], max_position_embeddings=128,
                             rms_norm_eps=d["eps"], rope_theta=d["theta"], tie_word_embeddings=False,
                             hidden_act="silu", attention_bias=False, use_sliding_window=False,
                             attention_dropout=0.0)
        cls, params, shift = Qwen3ForCausalLM, SDAR_DECODE, 0
    else:  # as Fast_dLLM_v2_7B's config.json (it has no mask_token_id; the tiny one names its own)
        cfg_json = dict(common, architectures=["Fast_dLLM_QwenForCausalLM"], model_type="Fast_dLLM_Qwen",
                        bd_size=BLOCK, use_cache=True,
                        auto_map={"AutoConfig": "configuration.Fast_dLLM_QwenConfig",
                                  "AutoModel": "modeling.Fast_dLLM_QwenModel",
                                  "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM"})
        hf_cfg = qwen2_config(d)
        cls, params, shift = Qwen2ForCausalLM, FAST_DECODE, 1
    write_json(os.path.join(directory, "config.json"), cfg_json)

    state = {k: v.to(torch.float32) for k, v in load_file(os.path.join(directory, "model.safetensors")).items()}
    model = build_hf(cls, hf_cfg, state, d)
    ids = torch.randint(0, d["vocab"] - 4, (NB, NL), generator=gen, dtype=torch.int64)
    ids[0, 9:] = IDS["mask"]
    ids[1, 5] = IDS["mask"]
    stats = {}
    logits = check_mask_semantics(model, ids, BLOCK, stats)
    tensors = {"input_ids": ids.contiguous(), "logits": logits.contiguous()}
    meta = {"format": "pt", "block_size": str(BLOCK), "steps": str(params["steps"]),
            "threshold": str(params["threshold"]), "sub_block": str(params["sub_block"]),
            "cases": str(len(DECODE_CASES))}
    for k, (plen, new) in enumerate(DECODE_CASES):
        prompt = torch.randint(0, d["vocab"] - 4, (plen,), generator=gen, dtype=torch.int64).tolist()
        out, nsteps = reference_decode(model, prompt, new, shift, params)
        tensors[f"decode_prompt_{k}"] = torch.tensor(prompt, dtype=torch.int64)
        tensors[f"decode_out_{k}"] = out.contiguous()
        meta[f"new_tokens_{k}"] = str(new)
        stats[f"steps_{k}"] = nsteps
        print(name, "decode", k, prompt, "->", out[plen:].tolist())
    save_file(tensors, os.path.join(directory, "reference.safetensors"), metadata=meta)
    return name, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "testdata", "fixtures"))
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for name, stats in [make(args.out, "sdar_tiny", 3001, True), make(args.out, "fast_dllm_v2_tiny", 3002, False)]:
        print(name, json.dumps(stats))


if __name__ == "__main__":
    sys.exit(main())
