"""Peak resident memory of `llmpack package` against the size of the model.

Builds a synthetic random Llama checkpoint (bf16 safetensors, sharded like the Hub's,
~1.1B parameters by default: the TinyLlama shape), packages it in a child process and
prints JSON with the child's peak RSS next to the checkpoint's size. Packaging streams
one tensor at a time, so the peak should track the largest tensor, not the model.

    python scripts/bench_package_memory.py [--quant q4f16] [--layers 22] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def build_checkpoint(out: Path, layers: int, hidden=2048, inter=5632, vocab=32000, heads=32, kv_heads=4) -> int:
    from checkpoints import build_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    head_dim = hidden // heads
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
           "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-5,
           "max_position_embeddings": 2048, "rope_theta": 10000.0, "tie_word_embeddings": False,
           "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
    (out / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)

    def bf16(shape, std=0.02):
        x = (rng.standard_normal(shape, dtype=np.float32) * std)
        return (x.view(np.uint32) >> 16).astype(np.uint16)  # bf16 bits, as safetensors stores them

    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (hidden, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        })
    shapes.update({"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)})
    # ~1 GB files with a weight_map index, as the Hub stores large models
    files, current, size = [], [], 0
    for name, shape in shapes.items():
        if size > 1 << 30:
            files.append(current)
            current, size = [], 0
        current.append(name)
        size += 2 * int(np.prod(shape))
    files.append(current)
    weight_map = {}
    for n, names in enumerate(files):
        fname = f"model-{n + 1:05d}-of-{len(files):05d}.safetensors"
        _write_bf16_safetensors(out / fname, {k: shapes[k] for k in names},
                                lambda k: bf16(shapes[k], 1.0 if "norm" in k else 0.02))
        weight_map.update({k: fname for k in names})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    build_tokenizer(out, 512)
    return sum(int(np.prod(s)) for s in shapes.values())


def _write_bf16_safetensors(path: Path, shapes: dict, make) -> None:
    """Write a bf16 safetensors file one tensor at a time (8-byte length, JSON header, data)."""
    header, pos = {}, 0
    for k, shape in shapes.items():
        n = 2 * int(np.prod(shape))
        header[k] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for k in shapes:
            f.write(make(k).tobytes())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", default="q4f16")
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--keep", type=Path, default=None, help="build the checkpoint here and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ck = args.keep or Path(tmp) / "ck"
        if not (ck / "config.json").exists():
            params = build_checkpoint(ck, args.layers)
        else:  # reuse a kept checkpoint
            from packager.checkpoint import open_checkpoint
            c = open_checkpoint(ck)
            params = sum(int(np.prod(s)) for s in c.shapes.values())
        ck_bytes = sum(p.stat().st_size for p in ck.glob("*.safetensors"))
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "packager.cli", "package", str(ck), "--out", str(Path(tmp) / "b"),
                            "--quant", args.quant, "--json"], capture_output=True, text=True)
        if r.returncode:
            sys.exit(r.stderr)
        summary = json.loads(r.stdout)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(json.dumps({"parameters": params, "checkpoint_bytes": ck_bytes, "quant": args.quant,
                          "bundle_bytes": summary["weights_bytes"], "seconds": round(time.perf_counter() - t0, 1),
                          "peak_rss_bytes": peak, "peak_rss_over_checkpoint": round(peak / ck_bytes, 3)}, indent=1))


if __name__ == "__main__":
    main()
