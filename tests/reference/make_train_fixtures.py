#!/usr/bin/python3
"""Reference fixtures for the trainer: a few AdamW steps on a fixed batch.

Starts from the committed model fixtures (tests/fixtures/models/<case>), runs the Hugging Face-semantics
forward of make_model_fixtures.py with autograd, and records per step: the objective, LM loss,
load-balancing loss, gradient norm before clipping and learning rate. PyTorch's own AdamW and
clip_grad_norm_ do the optimization; nothing here uses the C++ engine.

    /usr/bin/python3 tests/reference/make_train_fixtures.py tests/fixtures
"""
import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import make_model_fixtures as ref  # noqa: E402

OPTIONS = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "warmup_steps": 2,
           "min_lr_ratio": 0.1, "grad_clip": 1.0, "max_steps": 4, "aux_loss_coef": 0.01}

DT = {"F32": torch.float32, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        raw = bytearray(data[8 + n + b:8 + n + en])
        t = torch.frombuffer(raw, dtype=DT[e["dtype"]]).reshape(e["shape"]).clone()
        out[name] = t.float()
    return out


def lr_at(step, total):
    o = OPTIONS
    if step < o["warmup_steps"]:
        return o["lr"] * (step + 1) / o["warmup_steps"]
    decay = max(1, total - o["warmup_steps"] - 1)
    progress = min(1.0, (step - o["warmup_steps"]) / decay)
    return o["lr"] * (o["min_lr_ratio"] + (1 - o["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * progress)))


def aux_loss(records, valid, E):
    """SPEC §1, differentiable in P: E * sum_e f_e P_e over the real tokens of all MoE layers."""
    probs = torch.cat([r[1][valid] for r in records])
    idx = torch.cat([r[2][valid] for r in records]).reshape(-1)
    f = torch.bincount(idx, minlength=E).float() / idx.numel()
    return E * (f * probs.mean(0)).sum()


def run(case, fixtures):
    folder = os.path.join(fixtures, "models", case)
    cfg = json.load(open(os.path.join(folder, "config.json")))
    exp = json.load(open(os.path.join(folder, "expected.json")))
    W = read_safetensors(os.path.join(folder, "model.safetensors"))
    params = {n: torch.nn.Parameter(t) for n, t in W.items()}
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    o = OPTIONS
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    ids = torch.tensor(exp["input_ids"])
    mask = torch.tensor(exp["attention_mask"])
    labels = ids.masked_fill(mask == 0, -100)
    valid = mask.reshape(-1).bool()
    steps = []
    total = o["max_steps"]
    for step in range(total):
        opt.zero_grad()
        logits, records = ref.forward(cfg, params, ids, mask)
        V = logits.shape[-1]
        lm = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
                                               ignore_index=-100, reduction="mean")
        objective = lm
        aux = torch.zeros(())
        if records:
            aux = aux_loss(records, valid, records[0][1].shape[-1])
            objective = lm + o["aux_loss_coef"] * aux
        objective.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), o["grad_clip"])
        lr = lr_at(step, total)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        steps.append({"loss": objective.item(), "lm_loss": lm.item(), "aux_loss": aux.item(),
                      "grad_norm": norm.item(), "lr": lr})
    return {"options": OPTIONS, "case": case, "steps": steps}


def main(fixtures):
    os.makedirs(os.path.join(fixtures, "train"), exist_ok=True)
    for case in ("llama_gqa", "mixtral_hub"):
        out = run(case, fixtures)
        with open(os.path.join(fixtures, "train", case + ".json"), "w") as f:
            json.dump(out, f, indent=1)
        print(case, " ".join("%.5f" % s["loss"] for s in out["steps"]),
              "norms", " ".join("%.3f" % s["grad_norm"] for s in out["steps"]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
