"""Device-independent cost of a WebGPU decode step, from plan.json: compute-pass dispatches
per decode token and bytes read back per token, with the logits read back (every request
that needs them on the CPU, and bundles without the plan's "argmax" entry), with the
greedy token picked on the GPU (the "argmax" entry: 4 bytes), and with top-k / top-p sampled
from the K largest logits the GPU lists (the "topk" entry: 2 K + 2 words; a top-p step whose
nucleus is not surely among them reads the logits as well); and, for the synthetic plan, the
decode dispatches per token with the plan's fused lowerings off (`build_plan(fuse=False)`) and
on (docs/plan.md, "Fused dispatches"). For speculative decoding's verify calls (the plan's
"verify" entry, a step's token and its drafts): bytes read back per call of the entry's most
tokens and per row, with every row's logits read back, and with greedy requests' tokens picked on
the GPU (the "verify_argmax" entry: 8 bytes a row).

    python scripts/bench_decode_readback.py                   # SmolLM2-135M's shapes, q4f16
    python scripts/bench_decode_readback.py --vocab 262144    # the same with Gemma 3's vocabulary
    python scripts/bench_decode_readback.py --model qwen2.5-0.5b   # Qwen2.5-0.5B's shapes (q/k/v biases)
    python scripts/bench_decode_readback.py --bundle DIR      # a packaged bundle's plan.json

Prints one JSON line per path.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# SmolLM2-135M-Instruct's config.json (the fields the packager reads)
SMOLLM2_135M = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "rms_norm_eps": 1e-5,
                "max_position_embeddings": 8192, "tie_word_embeddings": True, "rope": {"theta": 100000.0}}
# Qwen2.5-0.5B-Instruct's (architecture qwen2: biases on q, k and v)
QWEN25_05B = {"vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
              "num_attention_heads": 14, "num_key_value_heads": 2, "head_dim": 64, "rms_norm_eps": 1e-6,
              "max_position_embeddings": 32768, "tie_word_embeddings": True, "rope": {"theta": 1000000.0}}
# --model: (architecture, config, name)
MODELS = {"smollm2-135m": ("llama", SMOLLM2_135M, "SmolLM2-135M"),
          "qwen2.5-0.5b": ("qwen2", QWEN25_05B, "Qwen2.5-0.5B")}


def synthetic_plan(cfg: dict, quant: str, context_window: int, fuse: bool = True, architecture: str = "llama") -> dict:
    """The plan a bundle of config `cfg` quantized `quant` would have (the tensor index only)."""
    from packager.models import config_from_manifest, definition
    from packager.plan import build_plan
    from quantization.formats import PART_ALIGN
    from quantization.policy import choose_format, get_scheme

    manifest = {"model": {"architecture": architecture, "config": cfg}}
    config = config_from_manifest(manifest, context_window)
    scheme, tensors = get_scheme(quant), []
    for t in definition(architecture).tensors(config):
        fmt = choose_format(scheme, t.shape, t.role)
        parts, pos = [], 0
        for spec in fmt.parts(t.shape if len(t.shape) == 2 else (1, t.shape[0])):
            pos += -pos % PART_ALIGN
            parts.append({"name": spec.name, "offset": pos, "bytes": spec.nbytes})
            pos += spec.nbytes
        tensors.append({"name": t.name, "shape": list(t.shape), "format": fmt.name, "parts": parts, "bytes": pos})
    manifest.update(tensors=tensors, quantization={"scheme": quant, "compute": scheme.compute})
    plan, _ = build_plan(manifest, config=config, fuse=fuse)
    return plan


def decode_costs(plan: dict) -> list[dict]:
    """Per path: dispatches and bytes read back per decode token."""
    decode = len(plan["entries"]["decode"]["dispatches"])
    logits = plan["buffers"][plan["outputs"]["logits"]]["elements"] * 4
    out = [{"path": "logits read back", "dispatches_per_token": decode, "bytes_read_back_per_token": logits}]
    if "argmax" in plan["entries"]:
        out.append({"path": "greedy on the GPU (argmax entry)",
                    "dispatches_per_token": decode + len(plan["entries"]["argmax"]["dispatches"]),
                    "bytes_read_back_per_token": 4})
    if "topk" in plan["entries"]:
        words = plan["buffers"][plan["outputs"]["topk"]]["elements"]
        out.append({"path": f"top-k / top-p from the GPU's {plan['entries']['topk']['k']} candidates (topk entry)",
                    "dispatches_per_token": decode + len(plan["entries"]["topk"]["dispatches"]),
                    "bytes_read_back_per_token": 4 * words,
                    "bytes_read_back_when_top_p_falls_back": 4 * words + logits})
    return out


def verify_costs(plan: dict) -> list[dict]:
    """Per verify path: dispatches and bytes read back per verify call of the entry's most tokens, and per row."""
    if "verify" not in plan["entries"]:
        return []
    rows = plan["entries"]["verify"]["max_seq_len"]
    dispatches = len(plan["entries"]["verify"]["dispatches"])
    row = plan["buffers"][plan["outputs"]["logits"]]["elements"] * 4
    out = [{"path": "verify, rows read back", "tokens_per_call": rows, "dispatches_per_call": dispatches,
            "bytes_read_back_per_call": rows * row, "bytes_read_back_per_row": row}]
    if "verify_argmax" in plan["entries"]:
        out.append({"path": "verify, greedy on the GPU (verify_argmax entry)", "tokens_per_call": rows,
                    "dispatches_per_call": dispatches + len(plan["entries"]["verify_argmax"]["dispatches"]),
                    "bytes_read_back_per_call": rows * 8, "bytes_read_back_per_row": 8})
    return out


def fusion_costs(cfg: dict, quant: str, context_window: int, architecture: str = "llama") -> dict:
    """Decode dispatches per token with the plan's fused lowerings off, on, and each one alone
    (the dispatches it saves)."""
    import packager.plan as plan_module

    def decode(**kw) -> int:
        plan = synthetic_plan(cfg, quant, context_window, architecture=architecture, **kw)
        return len(plan["entries"]["decode"]["dispatches"])

    unfused, fused, every = decode(fuse=False), decode(), list(plan_module.FUSIONS)
    saved = {}
    try:
        for fusion in every:
            plan_module.FUSIONS[:] = [fusion]
            saved[fusion.__name__] = unfused - decode()
    finally:
        plan_module.FUSIONS[:] = every
    return {"path": "decode dispatches per token, fusions off / on", "unfused": unfused, "fused": fused,
            "saved_by_each_fusion": saved}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="a bundle folder (its plan.json); default: --model's shapes")
    ap.add_argument("--model", choices=list(MODELS), default="smollm2-135m", help="the shapes of the synthetic plan")
    ap.add_argument("--quant", default="q4f16")
    ap.add_argument("--context-window", type=int, default=2048)
    ap.add_argument("--vocab", type=int, help="the model's shapes with this vocabulary size instead of its own")
    a = ap.parse_args()
    architecture, base, name = MODELS[a.model]
    cfg = {**base, "vocab_size": a.vocab or base["vocab_size"]}
    if a.bundle:
        plan, model = json.loads((a.bundle / "plan.json").read_text()), str(a.bundle)
    else:
        plan = synthetic_plan(cfg, a.quant, a.context_window, architecture=architecture)
        model = f"{name} shapes, vocab {cfg['vocab_size']}, {a.quant}"
    for row in decode_costs(plan) + verify_costs(plan):
        print(json.dumps({"model": model, **row}))
    if not a.bundle:
        print(json.dumps({"model": model, **fusion_costs(cfg, a.quant, a.context_window, architecture)}))


if __name__ == "__main__":
    main()
