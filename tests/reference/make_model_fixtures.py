#!/usr/bin/python3
"""Reference fixtures for the decoder tests.

Writes tiny random Hugging Face checkpoints (config.json + safetensors, written by the small
independent writer below) and the logits/losses that the Hugging Face semantics give for them, computed
here with plain PyTorch written from the transformers modelling code (Llama, Qwen2, Mistral, Mixtral,
Qwen2-MoE), token by token for the experts. Qwen3 and Qwen3-MoE have their own float64 forward below
(per head, per token), written from the published architecture. Nothing here uses the C++ engine.

    /usr/bin/python3 tests/reference/make_model_fixtures.py tests/fixtures/models

Needs only Debian's python3-torch. Output is deterministic for a given torch version; the fixtures are
committed, so the C++ tests never run this script.
"""
import json
import math
import os
import struct
import sys

import torch

DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}


def write_safetensors(path, tensors):
    """Independent safetensors writer: u64 header length, JSON header, packed row-major data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype in (torch.bfloat16,) else t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def write_checkpoint(folder, tensors, shard_count=1):
    os.makedirs(folder, exist_ok=True)
    if shard_count == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
        return
    names = list(tensors)
    per = math.ceil(len(names) / shard_count)
    weight_map, total = {}, 0
    for i in range(shard_count):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, shard_count)
        part = {n: tensors[n] for n in names[i * per:(i + 1) * per]}
        write_safetensors(os.path.join(folder, fname), part)
        for n, t in part.items():
            weight_map[n] = fname
            total += t.numel() * t.element_size()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)


# ---------------------------------------------------------------- reference forward (HF semantics)

def rms_norm(x, w, eps):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def swiglu(x, g, u, d):
    return (torch.nn.functional.silu(x @ g.T) * (x @ u.T)) @ d.T


def attention(cfg, W, p, x, mask):
    B, T, D = x.shape
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", D // H)
    def proj(n):
        y = x @ W[p + n + ".weight"].T
        if p + n + ".bias" in W:
            y = y + W[p + n + ".bias"]
        return y
    q = proj("self_attn.q_proj").view(B, T, H, hd).transpose(1, 2)
    k = proj("self_attn.k_proj").view(B, T, KV, hd).transpose(1, 2)
    v = proj("self_attn.v_proj").view(B, T, KV, hd).transpose(1, 2)
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    pos = torch.arange(T).float()
    rs = cfg.get("rope_scaling")
    if rs and rs.get("type") == "linear":
        pos = pos / rs["factor"]
    freqs = pos[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    rep = H // KV
    k = k[:, :, None].expand(B, KV, rep, T, hd).reshape(B, H, T, hd)  # HF repeat_kv
    v = v[:, :, None].expand(B, KV, rep, T, hd).reshape(B, H, T, hd)
    s = q @ k.transpose(2, 3) / math.sqrt(hd)
    s = s.masked_fill(~mask, torch.finfo(torch.float32).min)
    a = torch.softmax(s.float(), dim=-1)
    o = (a @ v).transpose(1, 2).reshape(B, T, H * hd)
    return o @ W[p + "self_attn.o_proj.weight"].T


def moe_block(cfg, W, p, x, records):
    """Token-by-token reference: route each token, run its chosen experts one at a time."""
    B, T, D = x.shape
    flat = x.reshape(-1, D)
    mixtral = cfg["model_type"] == "mixtral"
    E = cfg["num_local_experts"] if mixtral else cfg["num_experts"]
    K = cfg["num_experts_per_tok"]
    norm_topk = True if mixtral else cfg.get("norm_topk_prob", False)
    gate = W[p + ("block_sparse_moe.gate.weight" if mixtral else "mlp.gate.weight")]
    logits = flat.float() @ gate.float().T
    probs = torch.softmax(logits, dim=-1)
    records.append((logits, probs, torch.topk(probs, K, dim=-1).indices))
    out = torch.zeros_like(flat)
    for n in range(flat.shape[0]):
        w, idx = torch.topk(probs[n], K)
        if norm_topk:
            w = w / w.sum()
        for j in range(K):
            e = int(idx[j])
            if mixtral:
                q = p + "block_sparse_moe.experts.%d." % e
                y = swiglu(flat[n], W[q + "w1.weight"], W[q + "w3.weight"], W[q + "w2.weight"])
            else:
                q = p + "mlp.experts.%d." % e
                y = swiglu(flat[n], W[q + "gate_proj.weight"], W[q + "up_proj.weight"], W[q + "down_proj.weight"])
            out[n] += w[j] * y
    if not mixtral and p + "mlp.shared_expert.gate_proj.weight" in W:
        q = p + "mlp.shared_expert."
        sh = swiglu(flat, W[q + "gate_proj.weight"], W[q + "up_proj.weight"], W[q + "down_proj.weight"])
        out = out + torch.sigmoid(flat @ W[p + "mlp.shared_expert_gate.weight"].T) * sh
    return out.view(B, T, D)


def is_moe_layer(cfg, i):
    if cfg["model_type"] == "mixtral":
        return True
    if cfg["model_type"] == "qwen2_moe":
        return i not in cfg.get("mlp_only_layers", []) and (i + 1) % cfg.get("decoder_sparse_step", 1) == 0
    if cfg["model_type"] == "qwen3_moe":
        return qwen3_is_sparse(cfg, i)
    return False


def forward(cfg, W, ids, attn_mask):
    B, T = ids.shape
    eps = cfg["rms_norm_eps"]
    x = W["model.embed_tokens.weight"][ids]
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = j <= i
    win = cfg.get("sliding_window") if cfg["model_type"] in ("mistral", "mixtral") else None
    if win:
        allowed = allowed & (i - j < win)
    mask = allowed[None, None] & attn_mask.bool()[:, None, None, :]
    records = []
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        x = x + attention(cfg, W, p, rms_norm(x, W[p + "input_layernorm.weight"], eps), mask)
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        if is_moe_layer(cfg, l):
            x = x + moe_block(cfg, W, p, h, records)
        else:
            x = x + swiglu(h, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"], W[p + "mlp.down_proj.weight"])
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    return x @ head.T, records


def losses(cfg, logits, records, ids, attn_mask):
    labels = ids.masked_fill(attn_mask == 0, -100)
    V = logits.shape[-1]
    lm = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
                                           ignore_index=-100, reduction="mean")
    out = {"loss": lm.item()}
    if records:
        valid = attn_mask.reshape(-1).bool()
        E = records[0][1].shape[-1]
        dt = records[0][1].dtype  # float32, or float64 for the Qwen3 reference
        # SPEC §1: over the real tokens of all MoE layers, f_e = share of (token, slot) assignments.
        counts = torch.zeros(E, dtype=dt)
        probs_sum = torch.zeros(E, dtype=dt)
        n_tokens = 0
        n_assign = 0
        for logits_l, probs_l, idx_l in records:
            for n in range(idx_l.shape[0]):
                if not valid[n]:
                    continue
                for e in idx_l[n].tolist():
                    counts[e] += 1
                    n_assign += 1
                probs_sum += probs_l[n]
                n_tokens += 1
        f = counts / n_assign
        P = probs_sum / n_tokens
        out["aux_loss"] = float(E * (f * P).sum())
        z = torch.cat([torch.logsumexp(r[0][valid], dim=-1) for r in records])
        out["z_loss"] = float((z ** 2).mean())
    return out


# ---------------------------------------------------------------- Qwen3 and Qwen3-MoE, float64
# From the published architecture (the Qwen3 technical report, the Qwen3/Qwen3-MoE config keys of
# transformers): Qwen2's decoder without q/k/v biases, plus an RMSNorm over each head's head_dim values
# of q and k (weights q_norm, k_norm of shape (head_dim,), eps rms_norm_eps) applied before the rotary
# embedding; head_dim is its own config key (Qwen3Config's default is 128); scores scale head_dim^-0.5.
# Qwen3-MoE: layer i is sparse iff i is not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0;
# softmax router over num_experts, top num_experts_per_tok, renormalized only when norm_topk_prob; no
# shared expert. Everything here runs in float64 and loops over heads and tokens, so it shares no
# batching or summation order with the engine.

def qwen3_head_dim(cfg):
    default = 128 if cfg["model_type"] == "qwen3" else cfg["hidden_size"] // cfg["num_attention_heads"]
    return cfg.get("head_dim", default)


def qwen3_is_sparse(cfg, i):
    if cfg["model_type"] != "qwen3_moe":
        return False
    return (i not in (cfg.get("mlp_only_layers") or []) and cfg["num_experts"] > 0
            and (i + 1) % cfg.get("decoder_sparse_step", 1) == 0)


def rms64(x, w, eps):
    """RMSNorm over the last dimension, in the dtype of x (float64 here)."""
    return w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def qwen3_rope(z, theta):
    """z (T, hd) for one head: dimension i pairs with i + hd/2, angle t * theta^(-2i/hd)."""
    T, hd = z.shape
    half = hd // 2
    inv = torch.tensor([theta ** (-2.0 * i / hd) for i in range(half)], dtype=torch.float64)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    c, s = ang.cos(), ang.sin()
    a, b = z[:, :half], z[:, half:]
    return torch.cat((a * c - b * s, b * c + a * s), dim=-1)


def qwen3_attention(cfg, W, p, x, allowed):
    """x (T, D) of one sequence; allowed (T, T) bool. Head by head."""
    T, D = x.shape
    H, KV, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], qwen3_head_dim(cfg)
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    Wq, Wk, Wv = (W[p + "self_attn.%s_proj.weight" % n] for n in "qkv")
    heads = []
    for h in range(H):
        g = h // (H // KV)  # the KV head this query head reads
        q = x @ Wq[h * hd:(h + 1) * hd].T  # (T, hd)
        k = x @ Wk[g * hd:(g + 1) * hd].T
        v = x @ Wv[g * hd:(g + 1) * hd].T
        q = qwen3_rope(rms64(q, W[p + "self_attn.q_norm.weight"], eps), theta)
        k = qwen3_rope(rms64(k, W[p + "self_attn.k_norm.weight"], eps), theta)
        s = (q @ k.T) / math.sqrt(hd)
        s = s.masked_fill(~allowed, float("-inf"))
        heads.append(torch.softmax(s, dim=-1) @ v)
    return torch.cat(heads, dim=-1) @ W[p + "self_attn.o_proj.weight"].T


def qwen3_moe_block(cfg, W, p, x, record):
    """x (N, D): each token routed and run through its experts one at a time."""
    K = cfg["num_experts_per_tok"]
    logits = x @ W[p + "mlp.gate.weight"].T  # (N, E)
    probs = torch.softmax(logits, dim=-1)
    top = torch.topk(probs, K, dim=-1)
    record.append((logits, probs, top.indices))
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        w = top.values[n]
        if cfg.get("norm_topk_prob", False):
            w = w / w.sum()
        for j in range(K):
            q = p + "mlp.experts.%d." % int(top.indices[n, j])
            out[n] += w[j] * swiglu(x[n], W[q + "gate_proj.weight"], W[q + "up_proj.weight"], W[q + "down_proj.weight"])
    return out


def qwen3_forward(cfg, W, ids, attn_mask):
    """float64 logits (B, T, V) and per MoE layer (logits, probs, top-k) over the B*T tokens."""
    B, T = ids.shape
    eps = cfg["rms_norm_eps"]
    L = cfg["num_hidden_layers"]
    records = [[] for _ in range(L)]
    out = []
    for b in range(B):
        allowed = torch.tensor([[j <= i and bool(attn_mask[b, j]) for j in range(T)] for i in range(T)])
        x = W["model.embed_tokens.weight"][ids[b]]
        for l in range(L):
            p = "model.layers.%d." % l
            x = x + qwen3_attention(cfg, W, p, rms64(x, W[p + "input_layernorm.weight"], eps), allowed)
            h = rms64(x, W[p + "post_attention_layernorm.weight"], eps)
            if qwen3_is_sparse(cfg, l):
                x = x + qwen3_moe_block(cfg, W, p, h, records[l])
            else:
                x = x + swiglu(h, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"], W[p + "mlp.down_proj.weight"])
        x = rms64(x, W["model.norm.weight"], eps)
        head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
        out.append(x @ head.T)
    # Records in the engine's order: per MoE layer, the tokens of sequence 0 then sequence 1.
    merged = [tuple(torch.cat([r[i] for r in recs]) for i in range(3)) for recs in records if recs]
    return torch.stack(out), merged


def routing_margin(records, K):
    """Smallest gap between the k-th and (k+1)-th router probability: the float32 engine must pick
    the same experts as this float64 reference, so the fixture must not sit on a near tie."""
    gaps = [float((torch.sort(pr, dim=-1, descending=True).values[:, K - 1]
                   - torch.sort(pr, dim=-1, descending=True).values[:, K]).min())
            for _, pr, _ in records if pr.shape[-1] > K]
    return min(gaps) if gaps else float("inf")


# ---------------------------------------------------------------- random tiny checkpoints

def dense_tensors(cfg, g, std=0.15):
    D, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    qwen3 = cfg["model_type"] in ("qwen3", "qwen3_moe")
    hd = qwen3_head_dim(cfg) if qwen3 else cfg.get("head_dim", D // H)
    bias = cfg.get("attention_bias", cfg["model_type"] in ("qwen2", "qwen2_moe"))
    r = lambda *s: torch.randn(*s, generator=g) * std
    W = {"model.embed_tokens.weight": torch.randn(V, D, generator=g) * 0.5}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        W[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(D, generator=g)
        W[p + "self_attn.q_proj.weight"] = r(H * hd, D)
        W[p + "self_attn.k_proj.weight"] = r(KV * hd, D)
        W[p + "self_attn.v_proj.weight"] = r(KV * hd, D)
        if bias:
            W[p + "self_attn.q_proj.bias"] = r(H * hd)
            W[p + "self_attn.k_proj.bias"] = r(KV * hd)
            W[p + "self_attn.v_proj.bias"] = r(KV * hd)
        W[p + "self_attn.o_proj.weight"] = r(D, H * hd)
        if qwen3:  # far from 1, so that applying them after the rotary instead would show
            W[p + "self_attn.q_norm.weight"] = 1 + 0.4 * torch.randn(hd, generator=g)
            W[p + "self_attn.k_norm.weight"] = 1 + 0.4 * torch.randn(hd, generator=g)
        W[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(D, generator=g)
        if is_moe_layer(cfg, l):
            mixtral = cfg["model_type"] == "mixtral"
            # qwen3_moe: the same tensor names as qwen2_moe, never a shared expert
            E = cfg["num_local_experts"] if mixtral else cfg["num_experts"]
            Fe = F if mixtral else cfg["moe_intermediate_size"]
            W[p + ("block_sparse_moe.gate.weight" if mixtral else "mlp.gate.weight")] = torch.randn(E, D, generator=g) * 0.5
            for e in range(E):
                if mixtral:
                    q = p + "block_sparse_moe.experts.%d." % e
                    W[q + "w1.weight"], W[q + "w2.weight"], W[q + "w3.weight"] = r(Fe, D), r(D, Fe), r(Fe, D)
                else:
                    q = p + "mlp.experts.%d." % e
                    W[q + "gate_proj.weight"], W[q + "up_proj.weight"], W[q + "down_proj.weight"] = r(Fe, D), r(Fe, D), r(D, Fe)
            S = cfg.get("shared_expert_intermediate_size", 0)
            if not mixtral and S:
                q = p + "mlp.shared_expert."
                W[q + "gate_proj.weight"], W[q + "up_proj.weight"], W[q + "down_proj.weight"] = r(S, D), r(S, D), r(D, S)
                W[p + "mlp.shared_expert_gate.weight"] = r(1, D)
        else:
            W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"], W[p + "mlp.down_proj.weight"] = r(F, D), r(F, D), r(D, F)
    W["model.norm.weight"] = 1 + 0.1 * torch.randn(D, generator=g)
    if not cfg.get("tie_word_embeddings"):
        W["lm_head.weight"] = r(V, D)
    return W


def fuse_mixtral(cfg, W):
    """transformers v5 layout: gate_up_proj = cat(w1, w3) on dim 1, down_proj = stack(w2)."""
    out = {}
    E = cfg["num_local_experts"]
    for n, t in W.items():
        if ".block_sparse_moe." not in n:
            out[n] = t
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        q = p + "block_sparse_moe."
        out[p + "mlp.gate.weight"] = W[q + "gate.weight"]
        out[p + "mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([W[q + "experts.%d.w1.weight" % e], W[q + "experts.%d.w3.weight" % e]], 0) for e in range(E)])
        out[p + "mlp.experts.down_proj"] = torch.stack([W[q + "experts.%d.w2.weight" % e] for e in range(E)])
    return out


BASE = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu", "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 128, "torch_dtype": "float32",
        "tie_word_embeddings": False, "rope_scaling": None}

CASES = {
    "llama_gqa": dict(model_type="llama", architectures=["LlamaForCausalLM"]),
    "llama_tied_rope_linear": dict(model_type="llama", architectures=["LlamaForCausalLM"], tie_word_embeddings=True,
                                   num_key_value_heads=4, rope_scaling={"type": "linear", "factor": 2.0}),
    "llama_bf16": dict(model_type="llama", architectures=["LlamaForCausalLM"], torch_dtype="bfloat16"),
    "llama_sharded": dict(model_type="llama", architectures=["LlamaForCausalLM"], _shards=3),
    "qwen2_bias_tied": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], tie_word_embeddings=True,
                            rope_theta=1000000.0),
    "mistral_window": dict(model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=4),
    "mixtral_hub": dict(model_type="mixtral", architectures=["MixtralForCausalLM"], num_local_experts=4,
                        num_experts_per_tok=2, router_aux_loss_coef=0.02, sliding_window=None),
    "mixtral_fused": dict(model_type="mixtral", architectures=["MixtralForCausalLM"], num_local_experts=4,
                          num_experts_per_tok=2, router_aux_loss_coef=0.02, sliding_window=None, _fused=True),
    "qwen2_moe_shared": dict(model_type="qwen2_moe", architectures=["Qwen2MoeForCausalLM"], num_hidden_layers=3,
                             num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24,
                             shared_expert_intermediate_size=40, norm_topk_prob=False, decoder_sparse_step=1,
                             mlp_only_layers=[1], tie_word_embeddings=True),
    # Qwen3: head_dim 16 != 32 / 4, GQA 4:2, tied embeddings; the float64 reference.
    "qwen3_qknorm": dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], head_dim=16,
                         tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6, attention_bias=False,
                         use_sliding_window=False, sliding_window=None, max_window_layers=2,
                         attention_dropout=0.0, _float64=True),
    # Qwen3-MoE, decoder_sparse_step 2 (layers 1 and 3 sparse), norm_topk_prob false, head_dim 8 != 16 / 4.
    "qwen3_moe": dict(model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"], hidden_size=16,
                      intermediate_size=32, num_hidden_layers=4, head_dim=8, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=12, decoder_sparse_step=2, mlp_only_layers=[], norm_topk_prob=False,
                      router_aux_loss_coef=0.001, output_router_logits=False, rope_theta=1000000.0,
                      rms_norm_eps=1e-6, attention_bias=False, use_sliding_window=False, sliding_window=None,
                      _float64=True),
    # Qwen3-MoE, mlp_only_layers [0] (layers 1 and 2 sparse), norm_topk_prob true, MQA (1 KV head),
    # head_dim 16 != 16 / 2, tied embeddings.
    "qwen3_moe_mlp_only": dict(model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"], hidden_size=16,
                               intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                               num_key_value_heads=1, head_dim=16, num_experts=4, num_experts_per_tok=2,
                               moe_intermediate_size=12, decoder_sparse_step=1, mlp_only_layers=[0],
                               norm_topk_prob=True, router_aux_loss_coef=0.001, output_router_logits=False,
                               tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
                               attention_bias=False, use_sliding_window=False, sliding_window=None,
                               _float64=True),
}


def main(out_dir):
    torch.set_grad_enabled(False)
    for k, (name, spec) in enumerate(sorted(CASES.items())):
        cfg = dict(BASE)
        cfg.update({k2: v for k2, v in spec.items() if not k2.startswith("_")})
        g = torch.Generator().manual_seed(1234 + k)
        W = dense_tensors(cfg, g)
        if cfg["torch_dtype"] == "bfloat16":
            W = {n: t.to(torch.bfloat16) for n, t in W.items()}
        ids = torch.randint(0, cfg["vocab_size"], (2, 7), generator=g)
        attn = torch.ones(2, 7, dtype=torch.int64)
        attn[1, 5:] = 0  # second row: 5 real tokens, right padding
        if spec.get("_float64"):
            # The stored float32 weights, exactly, computed on in float64.
            logits, records = qwen3_forward(cfg, {n: t.double() for n, t in W.items()}, ids, attn)
            margin = routing_margin(records, cfg.get("num_experts_per_tok", 0))
            assert margin > 1e-4, "%s: a near tie in the routing (%g): change the seed" % (name, margin)
        else:
            Wf = {n: t.float() for n, t in W.items()}  # the reference computes in float32
            logits, records = forward(cfg, Wf, ids, attn)
        expected = {"input_ids": ids.tolist(), "attention_mask": attn.tolist(),
                    "logits": logits.tolist(), **losses(cfg, logits, records, ids, attn)}
        if spec.get("_float64"):
            expected["reference_dtype"] = "float64"
        folder = os.path.join(out_dir, name)
        disk = fuse_mixtral(cfg, W) if spec.get("_fused") else W
        write_checkpoint(folder, disk, spec.get("_shards", 1))
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        with open(os.path.join(folder, "expected.json"), "w") as f:
            json.dump(expected, f)
        print("%-24s loss %.6f %s" % (name, expected["loss"],
                                      ("aux %.6f" % expected["aux_loss"]) if "aux_loss" in expected else ""))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/models")
