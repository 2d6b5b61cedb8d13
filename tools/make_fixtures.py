#!/usr/bin/env python3
"""Generate the golden test fixtures of diffulex (testdata/fixtures/).

Each fixture is a tiny random Hugging Face checkpoint directory (config.json, model.safetensors, and for GPTQ
quantize_config.json) plus reference.safetensors with:
  input_ids       I64 [B, L]
  attention_mask  I64 [B, L]   1 = real token, 0 = padding (padding only masks KEY columns)
  logits          F32 [B, L, V] raw logits (no Dream shift), positions 0..L-1 for every row
and, for quantized fixtures, the dequantized F32 weight of one linear (layer 0 k_proj) under its HF name.

The logits come from transformers (Qwen2ForCausalLM for Dream, LlamaForCausalLM for LLaDA) in float32 with eager
attention and a 4D additive mask that is zero everywhere except on padded key columns, i.e. FULL bidirectional
attention as Dream and LLaDA use it. Every reference is cross-checked against an independent float64
implementation written here, and the mask is verified (bidirectional, padded keys ignored).

Quantized fixtures quantize every q/k/v/o/gate/up/down linear by round-to-nearest into the AutoGPTQ/GPTQModel
or AutoAWQ-gemm layouts described in docs/QUANTIZED_CHECKPOINTS.md; the packed tensors are decoded again by
an independent decoder and must give back the same integer codes (round trip).

Run on a machine with torch, transformers, safetensors and numpy (CPU is enough):
    python3 tools/make_fixtures.py --out testdata/fixtures
"""

import argparse
import json
import math
import os
import re
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

# Batch layout shared by all fixtures: rows 0 and 1 are full, row 2 has its last PAD positions padded.
B, L, PAD = 3, 9, 3

DREAM_DIMS = dict(hidden=64, inter=160, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=320,
                  theta=1.0e6, eps=1e-6)
LLADA_DIMS = dict(hidden=64, inter=160, layers=2, heads=4, kv_heads=4, head_dim=16, vocab=320,
                  theta=5.0e5, eps=1e-5)
QUANT_DIMS = dict(hidden=128, inter=256, layers=2, heads=4, kv_heads=2, head_dim=32, vocab=320,
                  theta=1.0e6, eps=1e-6)

# Dream-like special ids (Dream: bos <|beginoftext|> 151665, eos = pad 151643, mask 151666 = last added).
DREAM_IDS = dict(bos=317, eos=318, pad=318, mask=319)
# LLaDA-like special ids (LLaDA: eos = pad 126081, mask 126336; the mask is not the last id).
LLADA_IDS = dict(eos=317, pad=317, mask=316)

QUANT_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
SAMPLE_LINEAR = "model.layers.0.self_attn.k_proj.weight"

# AutoAWQ gemm packing: nibble j of a word holds output column 8c + AWQ_ORDER[j].
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
# vLLM's unpacking order for the same layout, written down independently: column 8c + m is nibble AWQ_REVERSE[m].
AWQ_REVERSE = (0, 4, 1, 5, 2, 6, 3, 7)


# ----------------------------------------------------------------------------------------------------------------
# Random weights and inputs
# ----------------------------------------------------------------------------------------------------------------

def normal(gen, shape, std):
    return torch.randn(shape, generator=gen, dtype=torch.float32) * std


def random_weights(gen, d, qkv_bias):
    """Random float32 weights under HF Qwen2/Llama names. Linears get std 1.2/sqrt(in_features) (0.075..0.15 here)
    so activations stay O(1) and the logits vary; norms are 1 +- 0.1; biases ~0.1; embeddings std 1."""
    h, inter, v = d["hidden"], d["inter"], d["vocab"]
    q_out, kv_out = d["heads"] * d["head_dim"], d["kv_heads"] * d["head_dim"]
    w = {"model.embed_tokens.weight": normal(gen, (v, h), 1.0)}

    def linear(name, out_f, in_f, bias):
        w[name + ".weight"] = normal(gen, (out_f, in_f), 1.2 / math.sqrt(in_f))
        if bias:
            w[name + ".bias"] = normal(gen, (out_f,), 0.1)

    for i in range(d["layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1.0 + normal(gen, (h,), 0.1)
        linear(p + "self_attn.q_proj", q_out, h, qkv_bias)
        linear(p + "self_attn.k_proj", kv_out, h, qkv_bias)
        linear(p + "self_attn.v_proj", kv_out, h, qkv_bias)
        linear(p + "self_attn.o_proj", h, q_out, False)
        w[p + "post_attention_layernorm.weight"] = 1.0 + normal(gen, (h,), 0.1)
        linear(p + "mlp.gate_proj", inter, h, False)
        linear(p + "mlp.up_proj", inter, h, False)
        linear(p + "mlp.down_proj", h, inter, False)
    w["model.norm.weight"] = 1.0 + normal(gen, (h,), 0.1)
    w["lm_head.weight"] = normal(gen, (v, h), 1.2 / math.sqrt(h))
    return w


def make_inputs(gen, vocab, mask_id):
    """Random valid ids (padded positions too); a few mask tokens as a diffusion canvas would hold."""
    ids = torch.randint(0, vocab, (B, L), generator=gen, dtype=torch.int64)
    ids[0, 3] = mask_id
    ids[1, 5:] = mask_id
    am = torch.ones(B, L, dtype=torch.int64)
    am[2, L - PAD:] = 0
    return ids, am


# ----------------------------------------------------------------------------------------------------------------
# Independent float64 reference (Qwen2/Llama decoder with full attention and key padding)
# ----------------------------------------------------------------------------------------------------------------

def own_forward(w, d, ids, am):
    w = {k: v.to(torch.float64) for k, v in w.items()}
    nh, nkv, hd, eps = d["heads"], d["kv_heads"], d["head_dim"], d["eps"]

    def rms(x, g):
        return g * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    inv = 1.0 / (d["theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(L, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(t):  # t [B, heads, L, hd], rotate-half layout
        t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
        return t * cos + torch.cat([-t2, t1], -1) * sin

    key_bias = torch.zeros(B, 1, 1, L, dtype=torch.float64)
    key_bias[(am == 0)[:, None, None, :]] = -math.inf

    x = w["model.embed_tokens.weight"][ids]
    for i in range(d["layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj").view(B, L, nh, hd).transpose(1, 2)
        k = lin(h, p + "self_attn.k_proj").view(B, L, nkv, hd).transpose(1, 2)
        v = lin(h, p + "self_attn.v_proj").view(B, L, nkv, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(nh // nkv, dim=1)  # q head j uses kv head j // (nh / nkv)
        v = v.repeat_interleave(nh // nkv, dim=1)
        s = q @ k.transpose(-1, -2) / math.sqrt(hd) + key_bias
        o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, L, nh * hd)
        x = x + lin(o, p + "self_attn.o_proj")
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = lin(h, p + "mlp.gate_proj")
        x = x + lin(torch.nn.functional.silu(g) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    return rms(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


# ----------------------------------------------------------------------------------------------------------------
# transformers reference
# ----------------------------------------------------------------------------------------------------------------

def set_rope_theta(cfg, theta):
    """transformers 4.x reads config.rope_theta, 5.x config.rope_parameters; set both."""
    cfg.rope_theta = theta
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict):
        rp = dict(rp)
        if rp and all(isinstance(x, dict) for x in rp.values()):  # per layer type
            rp = {k: dict(x, rope_theta=theta) for k, x in rp.items()}
        else:
            rp["rope_theta"] = theta
            rp.setdefault("rope_type", "default")
        cfg.rope_parameters = rp


def build_hf(cls, cfg, state, d):
    set_rope_theta(cfg, d["theta"])
    try:
        model = cls._from_config(cfg, attn_implementation="eager")
    except TypeError:
        cfg._attn_implementation = "eager"
        model = cls(cfg)
    model = model.to(torch.float32).eval()
    model.load_state_dict(state, strict=True)
    impl = getattr(model.config, "_attn_implementation", None)
    assert impl == "eager", f"attention implementation is {impl}, wanted eager"
    rot = getattr(model.model, "rotary_emb", None)
    if rot is not None and hasattr(rot, "inv_freq"):
        hd = d["head_dim"]
        want = 1.0 / (d["theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        got = rot.inv_freq.to(torch.float64)
        assert torch.allclose(got, want, rtol=1e-6), f"rope inv_freq mismatch: {got} vs {want}"
    return model


def key_padding_mask(am, style):
    """[B, 1, L, L] float mask. 'additive': 0 = attend, finfo.min on padded keys (transformers >= 4.40).
    'binary': 1 = attend, 0 = masked (the 4D convention of some older 4.3x releases); 'bool': True = attend.
    The first style whose logits match the float64 reference is used; transformers 4.4x-5.x take 'additive'."""
    keys_ok = (am != 0)[:, None, None, :].expand(B, 1, L, L)
    if style == "bool":
        return keys_ok.contiguous()
    if style == "additive":
        m = torch.zeros(B, 1, L, L, dtype=torch.float32)
        return m.masked_fill(~keys_ok, torch.finfo(torch.float32).min)
    return keys_ok.to(torch.float32).contiguous()


def hf_logits(model, ids, am, style):
    pos = torch.arange(L, dtype=torch.int64)[None, :].repeat(B, 1)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=key_padding_mask(am, style), position_ids=pos, use_cache=False)
    return out.logits.to(torch.float32)


def rel_err(a, b):
    return ((a.to(torch.float64) - b.to(torch.float64)).abs().max() / b.to(torch.float64).abs().max()).item()


def reference_logits(model, state, d, ids, am, stats):
    """Logits from transformers, checked against the float64 implementation and for the mask semantics."""
    own = own_forward(state, d, ids, am)
    tried = {}
    for style in ("additive", "binary", "bool"):
        try:
            lg = hf_logits(model, ids, am, style)
        except Exception as e:  # a style this transformers release refuses
            tried[style] = repr(e)
            continue
        tried[style] = rel_err(lg, own)
        if tried[style] < 2e-5:
            break
    else:
        raise AssertionError(f"transformers disagrees with the float64 reference for every mask style: {tried}")
    stats["mask_style"] = style
    stats["rel_err_vs_fp64"] = tried[style]

    # Bidirectional: changing the LAST token of row 0 must change the logits at position 0.
    ids2 = ids.clone()
    ids2[0, L - 1] = (ids2[0, L - 1] + 1) % d["vocab"]
    bidir = (hf_logits(model, ids2, am, style)[0, 0] - lg[0, 0]).abs().max().item()
    assert bidir > 1e-3, f"attention is not bidirectional (delta {bidir})"
    stats["bidir_delta"] = bidir

    # Padded keys are ignored: changing padded ids of row 2 must not change row 2's real positions ...
    ids3 = ids.clone()
    ids3[2, L - PAD:] = (ids3[2, L - PAD:] + 7) % d["vocab"]
    pad_delta = (hf_logits(model, ids3, am, style)[2, : L - PAD] - lg[2, : L - PAD]).abs().max().item()
    assert pad_delta <= 1e-6, f"padded keys leak into real positions (delta {pad_delta})"
    # ... while without the padding mask the same change does matter (so the check above is not vacuous).
    full = torch.ones_like(am)
    leak = (hf_logits(model, ids3, full, style)[2, : L - PAD] - hf_logits(model, ids, full, style)[2, : L - PAD])
    assert leak.abs().max().item() > 1e-3, "padding check is vacuous"
    stats["pad_delta"] = pad_delta
    stats["logit_std"] = lg.std().item()
    stats["logit_absmax"] = lg.abs().max().item()
    return lg


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def write_reference(directory, ids, am, logits, extra=None):
    tensors = {"input_ids": ids.contiguous(), "attention_mask": am.contiguous(),
               "logits": logits.to(torch.float32).contiguous()}
    tensors.update(extra or {})
    save_file(tensors, os.path.join(directory, "reference.safetensors"), metadata={"format": "pt"})


def qwen2_config(d):
    return Qwen2Config(vocab_size=d["vocab"], hidden_size=d["hidden"], intermediate_size=d["inter"],
                       num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
                       num_key_value_heads=d["kv_heads"], max_position_embeddings=128, rms_norm_eps=d["eps"],
                       rope_theta=d["theta"], tie_word_embeddings=False, hidden_act="silu",
                       use_sliding_window=False, attention_dropout=0.0)


def dream_config_json(d, dtype):
    """config.json as Dream-org/Dream-v0-*-7B write it (Qwen2 fields + model_type Dream + mask_token_id)."""
    return {
        "architectures": ["DreamModel"],
        "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": DREAM_IDS["bos"],
        "eos_token_id": DREAM_IDS["eos"],
        "pad_token_id": DREAM_IDS["pad"],
        "mask_token_id": DREAM_IDS["mask"],
        "hidden_act": "silu",
        "hidden_size": d["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": d["inter"],
        "max_position_embeddings": 128,
        "max_window_layers": d["layers"],
        "model_type": "Dream",
        "num_attention_heads": d["heads"],
        "num_hidden_layers": d["layers"],
        "num_key_value_heads": d["kv_heads"],
        "rms_norm_eps": d["eps"],
        "rope_scaling": None,
        "rope_theta": d["theta"],
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": dtype,
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": d["vocab"],
    }


# ----------------------------------------------------------------------------------------------------------------
# Dense fixtures
# ----------------------------------------------------------------------------------------------------------------

def make_dream(root, seed):
    d, name = DREAM_DIMS, "dream_tiny"
    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    w = random_weights(gen, d, qkv_bias=True)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in w.items()},
              os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    write_json(os.path.join(directory, "config.json"), dream_config_json(d, "bfloat16"))

    # The reference runs on exactly the stored bf16 values, upcast to float32.
    state = {k: v.to(torch.float32) for k, v in load_file(os.path.join(directory, "model.safetensors")).items()}
    ids, am = make_inputs(gen, d["vocab"], DREAM_IDS["mask"])
    model = build_hf(Qwen2ForCausalLM, qwen2_config(d), state, d)
    stats = {}
    logits = reference_logits(model, state, d, ids, am, stats)
    write_reference(directory, ids, am, logits)
    return name, stats


LLADA_LAYER_NAMES = {
    "self_attn.q_proj.weight": "q_proj.weight",
    "self_attn.k_proj.weight": "k_proj.weight",
    "self_attn.v_proj.weight": "v_proj.weight",
    "self_attn.o_proj.weight": "attn_out.weight",
    "mlp.gate_proj.weight": "ff_proj.weight",  # gate branch: silu is applied to it
    "mlp.up_proj.weight": "up_proj.weight",
    "mlp.down_proj.weight": "ff_out.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ff_norm.weight",
}
LLADA_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "model.transformer.wte.weight",
    "model.norm.weight": "model.transformer.ln_f.weight",
    "lm_head.weight": "model.transformer.ff_out.weight",
}


def llada_name(hf_name):
    if hf_name in LLADA_GLOBAL_NAMES:
        return LLADA_GLOBAL_NAMES[hf_name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
    assert m and m.group(2) in LLADA_LAYER_NAMES, f"no LLaDA name for {hf_name}"
    return f"model.transformer.blocks.{m.group(1)}.{LLADA_LAYER_NAMES[m.group(2)]}"


def llada_config_json(d):
    """config.json in the style of GSAI-ML/LLaDA-8B-Instruct (same field set, tiny sizes)."""
    return {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
                     "AutoModel": "modeling_llada.LLaDAModelLM"},
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": d["hidden"],
        "embedding_dropout": 0.0,
        "embedding_size": d["vocab"],
        "eos_token_id": LLADA_IDS["eos"],
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": LLADA_IDS["mask"],
        "max_sequence_length": 128,
        "mlp_hidden_size": d["inter"],
        "mlp_ratio": 4,
        "model_type": "llada",
        "multi_query_attention": None,
        "n_heads": d["heads"],
        "n_kv_heads": d["kv_heads"],
        "n_layers": d["layers"],
        "pad_token_id": LLADA_IDS["pad"],
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": d["eps"],
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": d["theta"],
        "scale_logits": False,
        "transformers_version": transformers.__version__,
        "use_cache": False,
        "vocab_size": d["vocab"],
        "weight_tying": False,
    }


def make_llada(root, seed):
    d, name = LLADA_DIMS, "llada_tiny"
    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    w = random_weights(gen, d, qkv_bias=False)
    to_llada = {k: llada_name(k) for k in w}
    assert len(set(to_llada.values())) == len(w)
    save_file({to_llada[k]: v.to(torch.bfloat16).contiguous() for k, v in w.items()},
              os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    write_json(os.path.join(directory, "config.json"), llada_config_json(d))

    stored = load_file(os.path.join(directory, "model.safetensors"))
    from_llada = {v: k for k, v in to_llada.items()}
    assert set(stored) == set(from_llada)
    state = {from_llada[k]: v.to(torch.float32) for k, v in stored.items()}
    ids, am = make_inputs(gen, d["vocab"], LLADA_IDS["mask"])
    cfg = LlamaConfig(vocab_size=d["vocab"], hidden_size=d["hidden"], intermediate_size=d["inter"],
                      num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
                      num_key_value_heads=d["kv_heads"], max_position_embeddings=128, rms_norm_eps=d["eps"],
                      rope_theta=d["theta"], tie_word_embeddings=False, hidden_act="silu",
                      attention_bias=False, mlp_bias=False, attention_dropout=0.0)
    model = build_hf(LlamaForCausalLM, cfg, state, d)
    stats = {}
    logits = reference_logits(model, state, d, ids, am, stats)
    write_reference(directory, ids, am, logits)
    return name, stats


# ----------------------------------------------------------------------------------------------------------------
# Quantization (round to nearest) and packing
# ----------------------------------------------------------------------------------------------------------------

def gptq_rtn(w, bits, group_size, sym, perm):
    """AutoGPTQ's quantizer without error feedback. w [N, K] float32. With act-order (perm given) the groups are
    formed along the permuted input order: group g holds input rows perm[g*gs:(g+1)*gs], so g_idx[perm[j]] = j // gs
    (what AutoGPTQ's g_idx[invperm] produces). Returns codes [N, K], fp16 scales [G, N], zeros [G, N], g_idx [K]."""
    n, k = w.shape
    maxq = 2 ** bits - 1
    gs = k if group_size == -1 else group_size
    groups = k // gs
    order = np.arange(k) if perm is None else perm
    codes = np.zeros((n, k), np.int64)
    scales = np.zeros((groups, n), np.float16)
    zeros = np.zeros((groups, n), np.int64)
    g_idx = np.full(k, -1, np.int32)
    for g in range(groups):
        cols = order[g * gs:(g + 1) * gs]
        x = w[:, cols].astype(np.float32)
        xmin = np.minimum(x.min(1), 0.0)
        xmax = np.maximum(x.max(1), 0.0)
        if sym:
            xmax = np.maximum(np.abs(xmin), xmax)
            xmin = np.where(xmin < 0, -xmax, xmin)
        both = (xmin == 0) & (xmax == 0)
        xmin[both], xmax[both] = -1.0, 1.0
        s16 = ((xmax - xmin) / maxq).astype(np.float16)  # stored precision; codes are made against it
        s = s16.astype(np.float32)
        if sym:
            z = np.full(n, (maxq + 1) // 2, np.int64)
        else:
            z = np.clip(np.rint(-xmin / s), 0, maxq).astype(np.int64)
        codes[:, cols] = np.clip(np.rint(x / s[:, None]) + z[:, None], 0, maxq).astype(np.int64)
        scales[g], zeros[g], g_idx[cols] = s16, z, g
    assert (g_idx >= 0).all()
    return codes, scales, zeros, g_idx


def awq_rtn(w, group_size):
    """AutoAWQ's zero-point quantizer (pseudo_quantize_tensor) with the activation scaling left out."""
    n, k = w.shape
    groups = k // group_size
    codes = np.zeros((n, k), np.int64)
    scales = np.zeros((groups, n), np.float16)
    zeros = np.zeros((groups, n), np.int64)
    for g in range(groups):
        x = w[:, g * group_size:(g + 1) * group_size].astype(np.float32)
        mx, mn = x.max(1), x.min(1)
        s16 = (np.maximum(mx - mn, 1e-5) / 15.0).astype(np.float16)
        s = s16.astype(np.float32)
        z = np.clip(-np.rint(mn / s), 0, 15).astype(np.int64)
        codes[:, g * group_size:(g + 1) * group_size] = np.clip(np.rint(x / s[:, None]) + z[:, None], 0, 15)
        scales[g], zeros[g] = s16, z
    g_idx = (np.arange(k) // group_size).astype(np.int32)
    return codes, scales, zeros, g_idx


def dequantize(codes, scales, zeros, g_idx):
    """W[n, k] = scale[g_idx[k], n] * (q[n, k] - z[g_idx[k], n]), in float32."""
    s = scales.astype(np.float32)[g_idx, :].T
    z = zeros[g_idx, :].T
    return (s * (codes - z).astype(np.float32)).astype(np.float32)


def pack_gptq_qweight(codes_nk, bits):
    """[N, K] codes -> int32 [K/p, N]: input row k goes to word k // p at bits b*(k % p)."""
    p = 32 // bits
    ct = codes_nk.T.astype(np.uint32)
    k, n = ct.shape
    grouped = ct.reshape(k // p, p, n)
    out = np.zeros((k // p, n), np.uint32)
    for i in range(p):
        out |= grouped[:, i, :] << np.uint32(bits * i)
    return out.view(np.int32)


def pack_gptq_qzeros(stored_zeros_gn, bits):
    """[G, N] stored zeros -> int32 [G, N/p]: column n goes to word n // p at bits b*(n % p)."""
    p = 32 // bits
    g, n = stored_zeros_gn.shape
    grouped = stored_zeros_gn.astype(np.uint32).reshape(g, n // p, p)
    out = np.zeros((g, n // p), np.uint32)
    for i in range(p):
        out |= grouped[:, :, i] << np.uint32(bits * i)
    return out.view(np.int32)


def pack_awq(values_rn):
    """[R, N] 4-bit values -> int32 [R, N/8]: nibble j of word (r, c) holds column 8c + AWQ_ORDER[j]."""
    r, n = values_rn.shape
    grouped = values_rn.astype(np.uint32).reshape(r, n // 8, 8)
    out = np.zeros((r, n // 8), np.uint32)
    for j in range(8):
        out |= grouped[:, :, AWQ_ORDER[j]] << np.uint32(4 * j)
    return out.view(np.int32)


# Independent decoders: element-wise gathers, written from the format description rather than as inverses of the
# packers above.

def decode_gptq_qweight(qweight, bits, k):
    u = qweight.view(np.uint32)
    p, mask = 32 // bits, np.uint32(2 ** bits - 1)
    rows = np.arange(k)
    shifts = (bits * (rows % p)).astype(np.uint32)
    return ((u[rows // p, :] >> shifts[:, None]) & mask).astype(np.int64)  # [K, N]


def decode_gptq_qzeros(qzeros, bits, n):
    u = qzeros.view(np.uint32)
    p, mask = 32 // bits, np.uint32(2 ** bits - 1)
    cols = np.arange(n)
    shifts = (bits * (cols % p)).astype(np.uint32)
    return ((u[:, cols // p] >> shifts[None, :]) & mask).astype(np.int64)  # [G, N]


def decode_awq(packed, n):
    u = packed.view(np.uint32)
    cols = np.arange(n)
    shifts = (4 * np.asarray(AWQ_REVERSE)[cols % 8]).astype(np.uint32)
    return ((u[:, cols // 8] >> shifts[None, :]) & np.uint32(15)).astype(np.int64)  # [R, N]


QUANT_SPECS = {
    "gptq_sym_g64": dict(method="gptq", bits=4, group_size=64, sym=True, desc_act=False, fmt="gptq"),
    "gptq_asym_actorder_g32": dict(method="gptq", bits=4, group_size=32, sym=False, desc_act=True, fmt="gptq"),
    "gptq_v2_asym_g64": dict(method="gptq", bits=4, group_size=64, sym=False, desc_act=False, fmt="gptq_v2"),
    "gptq_sym_gall": dict(method="gptq", bits=4, group_size=-1, sym=True, desc_act=False, fmt="gptq"),
    "gptq_8bit_g64": dict(method="gptq", bits=8, group_size=64, sym=True, desc_act=False, fmt="gptq"),
    "awq_g64": dict(method="awq", bits=4, group_size=64),
}


def quantize_linear(w_nk, spec, rng):
    """Returns (checkpoint tensors as numpy, codes, scales, zeros, g_idx) for one linear."""
    n, k = w_nk.shape
    if spec["method"] == "awq":
        codes, scales, zeros, g_idx = awq_rtn(w_nk, spec["group_size"])
        tensors = {"qweight": pack_awq(codes.T), "qzeros": pack_awq(zeros), "scales": scales}
        return tensors, codes, scales, zeros, g_idx
    bits = spec["bits"]
    perm = rng.permutation(k) if spec["desc_act"] else None
    codes, scales, zeros, g_idx = gptq_rtn(w_nk, bits, spec["group_size"], spec["sym"], perm)
    if spec["fmt"] == "gptq":
        # v1 stores z - 1; z = 0 would wrap and is not representable, so insist it does not occur.
        assert zeros.min() >= 1, "gptq v1 cannot store a zero point of 0"
        stored = zeros - 1
    else:
        stored = zeros
    tensors = {"qweight": pack_gptq_qweight(codes, bits), "qzeros": pack_gptq_qzeros(stored, bits),
               "scales": scales, "g_idx": g_idx}
    if spec["sym"] and spec["fmt"] == "gptq":
        want = {4: 0x77777777, 8: 0x7F7F7F7F}[bits]
        assert (tensors["qzeros"].view(np.uint32) == want).all()
    return tensors, codes, scales, zeros, g_idx


def decode_linear(t, spec, n, k):
    """Independent decode of a stored linear back to (codes [N, K], scales, zeros [G, N], g_idx)."""
    scales = t["scales"].numpy()
    if spec["method"] == "awq":
        codes = decode_awq(t["qweight"].numpy(), n).T
        zeros = decode_awq(t["qzeros"].numpy(), n)
        g_idx = (np.arange(k) // spec["group_size"]).astype(np.int32)
        return codes, scales, zeros, g_idx
    codes = decode_gptq_qweight(t["qweight"].numpy(), spec["bits"], k).T
    zeros = decode_gptq_qzeros(t["qzeros"].numpy(), spec["bits"], n)
    if spec["fmt"] == "gptq":
        zeros = zeros + 1
    return codes, scales, zeros, t["g_idx"].numpy()


def quant_config(spec):
    if spec["method"] == "awq":
        return {"quant_method": "awq", "bits": 4, "group_size": spec["group_size"], "zero_point": True,
                "version": "gemm", "modules_to_not_convert": None}
    cfg = {"quant_method": "gptq", "bits": spec["bits"], "group_size": spec["group_size"],
           "desc_act": spec["desc_act"], "sym": spec["sym"], "checkpoint_format": spec["fmt"],
           "static_groups": False, "true_sequential": True, "damp_percent": 0.01}
    if spec["fmt"] == "gptq":  # AutoGPTQ's field set
        cfg.update({"model_name_or_path": None, "model_file_base_name": "model"})
    else:  # GPTQModel's field set
        cfg.update({"lm_head": False, "dynamic": None, "pack_dtype": "int32",
                    "meta": {"quantizer": ["diffulex-tools-make_fixtures:rtn"]}})
    return cfg


def make_quant(root, name, spec, seed):
    d = QUANT_DIMS
    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    w = {k: v.to(torch.bfloat16).to(torch.float32) for k, v in random_weights(gen, d, qkv_bias=True).items()}

    stored, expected, quant_modules = {}, {}, {}
    max_err_in_scales = 0.0
    for hf_name, t in w.items():
        mod = hf_name[: -len(".weight")]
        if hf_name.endswith(".weight") and mod.split(".", 3)[-1] in QUANT_LINEARS:
            w_nk = t.numpy()
            tensors, codes, scales, zeros, g_idx = quantize_linear(w_nk, spec, rng)
            for suffix, arr in tensors.items():
                stored[f"{mod}.{suffix}"] = torch.from_numpy(np.ascontiguousarray(arr))
            deq = dequantize(codes, scales, zeros, g_idx)
            expected[hf_name] = (codes, zeros, g_idx, deq)
            quant_modules[mod] = w_nk.shape
            err = np.abs(deq - w_nk) / scales.astype(np.float32)[g_idx, :].T
            max_err_in_scales = max(max_err_in_scales, float(err.max()))
        else:  # embeddings, norms, lm_head and the q/k/v biases stay unquantized, fp16 as in real checkpoints
            stored[hf_name] = t.to(torch.float16)
    assert max_err_in_scales <= 1.01, f"rounding error {max_err_in_scales} scales"
    save_file({k: v.contiguous() for k, v in stored.items()}, os.path.join(directory, "model.safetensors"),
              metadata={"format": "pt"})

    config = dream_config_json(d, "float16")
    qcfg = quant_config(spec)
    config["quantization_config"] = qcfg
    write_json(os.path.join(directory, "config.json"), config)
    if spec["method"] == "gptq":
        write_json(os.path.join(directory, "quantize_config.json"), qcfg)

    # Read the checkpoint back, decode it independently and require the exact codes, zeros and dequantized
    # weights; the reference model is built from what the files hold.
    back = load_file(os.path.join(directory, "model.safetensors"))
    state = {}
    for key, t in back.items():
        mod, suffix = key.rsplit(".", 1)
        if mod in quant_modules and suffix in ("qweight", "qzeros", "scales", "g_idx"):
            continue
        assert t.dtype == torch.float16, f"{key} is {t.dtype}"
        state[key] = t.to(torch.float32)
    for mod, (n, k) in quant_modules.items():
        parts = {s: back[f"{mod}.{s}"] for s in ("qweight", "qzeros", "scales", "g_idx") if f"{mod}.{s}" in back}
        codes, scales, zeros, g_idx = decode_linear(parts, spec, n, k)
        want_codes, want_zeros, want_gidx, want_deq = expected[mod + ".weight"]
        assert np.array_equal(codes, want_codes), f"{mod}: qweight round trip failed"
        assert np.array_equal(zeros, want_zeros), f"{mod}: qzeros round trip failed"
        assert np.array_equal(g_idx, want_gidx), f"{mod}: g_idx round trip failed"
        deq = dequantize(codes, scales, zeros, g_idx)
        assert np.array_equal(deq, want_deq)
        state[mod + ".weight"] = torch.from_numpy(deq)
    if spec["method"] == "gptq" and spec["desc_act"]:
        g = back["model.layers.0.self_attn.q_proj.g_idx"].numpy()
        assert not np.array_equal(g, np.sort(g)), "act-order g_idx should not be sorted"

    ids, am = make_inputs(gen, d["vocab"], DREAM_IDS["mask"])
    model = build_hf(Qwen2ForCausalLM, qwen2_config(d), state, d)
    stats = {"max_rounding_err_in_scales": max_err_in_scales}
    logits = reference_logits(model, state, d, ids, am, stats)
    write_reference(directory, ids, am, logits, {SAMPLE_LINEAR: state[SAMPLE_LINEAR].contiguous()})
    return name, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "testdata", "fixtures"))
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}")

    results = [make_dream(args.out, 1001), make_llada(args.out, 1002)]
    for i, (name, spec) in enumerate(QUANT_SPECS.items()):
        results.append(make_quant(args.out, name, spec, 2001 + i))

    total = 0
    for name, stats in results:
        size = sum(os.path.getsize(os.path.join(args.out, name, f)) for f in os.listdir(os.path.join(args.out, name)))
        total += size
        print(f"{name:24s} {size:8d} B  " + "  ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()))
    print(f"total {total} bytes")
    assert total < 3_500_000, "fixtures grew past the size budget"


if __name__ == "__main__":
    sys.exit(main())
