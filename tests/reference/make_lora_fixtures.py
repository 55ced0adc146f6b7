#!/usr/bin/python3
"""Reference fixtures for LoRA (the trainer's adapters and PEFT adapter folders as inputs).

Writes a tiny random Qwen3 base (config.json + model.safetensors) and a PEFT LoRA adapter folder for it
(adapter_config.json + adapter_model.safetensors with PEFT's key names,
base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight), and what the adapted model computes:
logits, the mean next-token loss and its gradients with respect to every lora_A and lora_B, all in
float64 from the merged weights W + (alpha / r) B A through the float64 Qwen3 forward of
make_model_fixtures.py (head by head, token by token). The engine runs the adapter path (the base
projection plus the low-rank update), so the two share neither the formula nor the summation order.

    /usr/bin/python3 tests/reference/make_lora_fixtures.py tests/fixtures/lora

Needs only Debian's python3-torch; the fixtures are committed.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_fixtures as ref  # noqa: E402

RANK, ALPHA = 4, 8.0                      # scale alpha / r = 2
TARGETS = ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]  # k_proj and up_proj stay as they are


def module_of(target):
    return ("self_attn." if target in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp.") + target


def main(out_dir):
    cfg = dict(ref.BASE)
    cfg.update({k: v for k, v in ref.CASES["qwen3_qknorm"].items() if not k.startswith("_")})
    g = torch.Generator().manual_seed(4242)
    W = ref.dense_tensors(cfg, g)
    ids = torch.randint(0, cfg["vocab_size"], (2, 7), generator=g)
    attn = torch.ones(2, 7, dtype=torch.int64)
    attn[1, 5:] = 0

    # The adapter: A and B random (a trained adapter, not PEFT's zero-B start), stored in float32.
    adapter = {}
    for l in range(cfg["num_hidden_layers"]):
        for t in TARGETS:
            w = W["model.layers.%d.%s.weight" % (l, module_of(t))]
            key = "base_model.model.model.layers.%d.%s" % (l, module_of(t))
            adapter[key + ".lora_A.weight"] = torch.randn(RANK, w.shape[1], generator=g) * 0.3
            adapter[key + ".lora_B.weight"] = torch.randn(w.shape[0], RANK, generator=g) * 0.3

    # float64 leaves, merged into the base weights, through the float64 forward.
    leaves = {n: t.double().requires_grad_(True) for n, t in adapter.items()}
    W64 = {n: t.double() for n, t in W.items()}
    for l in range(cfg["num_hidden_layers"]):
        for t in TARGETS:
            key = "base_model.model.model.layers.%d.%s" % (l, module_of(t))
            name = "model.layers.%d.%s.weight" % (l, module_of(t))
            W64[name] = W64[name] + (ALPHA / RANK) * leaves[key + ".lora_B.weight"] @ leaves[key + ".lora_A.weight"]
    logits, _ = ref.qwen3_forward(cfg, W64, ids, attn)
    labels = ids.masked_fill(attn == 0, -100)
    V = logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
                                             ignore_index=-100, reduction="mean")
    loss.backward()
    base_logits, _ = ref.qwen3_forward(cfg, {n: t.double() for n, t in W.items()}, ids, attn)

    base = os.path.join(out_dir, "base")
    ref.write_checkpoint(base, W)
    with open(os.path.join(base, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    folder = os.path.join(out_dir, "adapter")
    os.makedirs(folder, exist_ok=True)
    ref.write_safetensors(os.path.join(folder, "adapter_model.safetensors"), adapter)
    # The keys PEFT 0.x writes; lora_dropout is not 0 so that evaluation shows it is off there.
    config = {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "../base", "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
              "layers_pattern": None, "layers_to_transform": None, "lora_alpha": ALPHA, "lora_dropout": 0.1,
              "modules_to_save": None, "peft_type": "LORA", "r": RANK, "rank_pattern": {}, "revision": None,
              "target_modules": TARGETS, "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": False}
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    expected = {"input_ids": ids.tolist(), "attention_mask": attn.tolist(), "logits": logits.tolist(),
                "base_logits": base_logits.tolist(), "loss": loss.item(),
                "grads": {n: t.grad.reshape(-1).tolist() for n, t in leaves.items()}}
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f)
    print("lora: loss %.6f, %d adapter tensors" % (loss.item(), len(adapter)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/lora")
