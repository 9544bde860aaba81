"""Decode speed of a large vocabulary: two synthetic Gemma 3 models that differ only in
their vocabulary (262,144 tokens, Gemma 3's, against 49,152, SmolLM2's), with Gemma 3
270M's layer shapes (hidden 640, 4 of its 18 layers), random weights, packaged q4f16 (the
tied table at 8 bits), run by `llmpack bench` on the Wasm backend in Node.

    python scripts/bench_vocab.py [--layers 4] [--threads 1] [--out /tmp/bench-vocab]

Prints one JSON line per model (vocabulary, weights MB, decode and prefill tokens/s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def build(out: Path, vocab: int, layers: int) -> Path:
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from checkpoints import build_tokenizer

    if (out / "config.json").exists():
        return out
    cfg = Gemma3TextConfig(vocab_size=vocab, hidden_size=640, intermediate_size=2048, num_hidden_layers=layers,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                           sliding_window=512, max_position_embeddings=32768,
                           layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"])
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).to(torch.bfloat16).eval()
    model.save_pretrained(out)
    build_tokenizer(out, 512)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", default="1")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-vocab"))
    args = ap.parse_args()
    for vocab in (262144, 49152):
        src = build(args.out / f"src-{vocab}", vocab, args.layers)
        bundle = args.out / f"bundle-{vocab}"
        if not (bundle / "manifest.json").exists():
            subprocess.run(["llmpack", "package", str(src), "--quant", "q4f16", "--quantizer", "rtn", "--out",
                            str(bundle), "--force", "--json"], check=True, capture_output=True)
        r = subprocess.run(["llmpack", "bench", str(bundle), "--backend", "wasm", "--threads", args.threads,
                            "--json"], check=True, capture_output=True, text=True)
        result = json.loads(r.stdout)
        manifest = json.loads((bundle / "manifest.json").read_text())
        keys = ("decode_tok_s", "decode_ms_per_token", "prefill_tok_s", "load_cold_ms", "load_cached_ms", "threads")
        print(json.dumps({"vocab": vocab, "weights_mb": round(manifest["memory"]["weights_bytes"] / 1e6, 1),
                          **{k: result.get(k) for k in keys}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
