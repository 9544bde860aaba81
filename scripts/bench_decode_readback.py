"""Device-independent cost of a WebGPU decode step, from plan.json: compute-pass dispatches
per decode token and bytes read back per token, with the logits read back (every request
that needs them on the CPU, and bundles without the plan's "argmax" entry) and with the
greedy token picked on the GPU (the "argmax" entry: 4 bytes); and, for the synthetic plan,
the decode dispatches per token with the plan's fused lowerings off (`build_plan(fuse=False)`)
and on (docs/plan.md, "Fused dispatches").

    python scripts/bench_decode_readback.py                   # SmolLM2-135M's shapes, q4f16
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


def synthetic_plan(cfg: dict, quant: str, context_window: int, fuse: bool = True) -> dict:
    """The plan a bundle of config `cfg` quantized `quant` would have (the tensor index only)."""
    from packager.models import config_from_manifest, definition
    from packager.plan import build_plan
    from quantization.formats import PART_ALIGN
    from quantization.policy import choose_format, get_scheme

    manifest = {"model": {"architecture": "llama", "config": cfg}}
    config = config_from_manifest(manifest, context_window)
    scheme, tensors = get_scheme(quant), []
    for t in definition("llama").tensors(config):
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
    return out


def fusion_costs(unfused: dict, fused: dict) -> dict:
    """Decode dispatches per token without and with the fused lowerings, and the fused
    dispatches by kernel template."""
    decode = fused["entries"]["decode"]["dispatches"]
    plain = set(unfused["kernels"])
    by_template: dict[str, int] = {}
    for d in decode:
        if d["kernel"] not in plain:
            t = fused["kernels"][d["kernel"]]["template"]
            by_template[t] = by_template.get(t, 0) + 1
    return {"path": "decode dispatches per token, fusions off / on",
            "unfused": len(unfused["entries"]["decode"]["dispatches"]), "fused": len(decode),
            "fused_dispatches_by_template": by_template}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="a bundle folder (its plan.json); default: SmolLM2-135M's shapes")
    ap.add_argument("--quant", default="q4f16")
    ap.add_argument("--context-window", type=int, default=2048)
    a = ap.parse_args()
    if a.bundle:
        plan, model = json.loads((a.bundle / "plan.json").read_text()), str(a.bundle)
    else:
        plan, model = synthetic_plan(SMOLLM2_135M, a.quant, a.context_window), f"SmolLM2-135M shapes, {a.quant}"
    for row in decode_costs(plan):
        print(json.dumps({"model": model, **row}))
    if not a.bundle:
        unfused = synthetic_plan(SMOLLM2_135M, a.quant, a.context_window, fuse=False)
        print(json.dumps({"model": model, **fusion_costs(unfused, plan)}))


if __name__ == "__main__":
    main()
