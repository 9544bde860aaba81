"""Architecture -> execution plan (docs/plan.md).

build_plan(manifest) turns a bundle manifest (model config + tensor index) into the
plan JSON that the runtimes interpret, and the list of specialized kernels it uses.
The plan is data: ordered dispatches whose uniform values and workgroup counts are
expressions (packager/plan_expr.py) over the dynamic dimensions `seq_len` and
`past_len`, so one compiled kernel set serves every prompt length.
"""

from __future__ import annotations

import math


from .compile import ACT_BYTES, DEFAULT_MAX_BINDING, DEFAULT_MAX_BUFFER, TEMPLATES, WEIGHT_PARTS, KernelSpec
from .errors import PackError
from .plan_expr import evaluate
from .rope import rope_inv_freq

PLAN_FORMAT = "llmpack-plan"
PLAN_VERSION = 1
DEFAULT_PREFILL_CHUNK = 128
CONTEXT_CAP = 4096  # default context window = min(max_position_embeddings, CONTEXT_CAP)
MAX_WORKGROUPS = 65535  # WebGPU's default maxComputeWorkgroupsPerDimension
MATVEC_ROWS = 16  # output rows per matvec workgroup (kernels/matvec.wgsl)
TILE_M, TILE_N = 32, 64  # output tile of kernels/matmul.wgsl (tokens x weight rows)
ATTN_SPLIT = 256  # keys per workgroup of the decode attention (kernels/attention_decode.wgsl)
BLOCK_ROW_MULTIPLE = 64  # row blocks of a split weight are multiples of this
DTYPE_BYTES = {"u32": 4, "f32": 4}


def align16(n: int) -> int:
    return (n + 15) // 16 * 16


def buffer_size(buf: dict, variant: str) -> int:
    """Bytes to allocate for a plan buffer (docs/plan.md)."""
    if buf["kind"] == "weight":
        return align16(buf["bytes"])
    item = ACT_BYTES[variant] if buf["dtype"] == "act" else DTYPE_BYTES[buf["dtype"]]
    return align16(buf["elements"] * item)


# ---------------------------------------------------------------------------------------
# plan builder


class _Builder:
    def __init__(self, manifest: dict, context_window, max_binding_size, max_buffer_size, prefill_chunk):
        model = manifest.get("model", {})
        if model.get("architecture", "llama") != "llama":
            raise PackError(f"no plan for architecture {model.get('architecture')!r} (llama only)")
        cfg = model["config"]
        self.cfg = cfg
        self.H = int(cfg["hidden_size"])
        self.I = int(cfg["intermediate_size"])
        self.L = int(cfg["num_hidden_layers"])
        self.NH = int(cfg["num_attention_heads"])
        self.NKV = int(cfg.get("num_key_value_heads") or self.NH)
        self.HD = int(cfg.get("head_dim") or self.H // self.NH)
        self.V = int(cfg["vocab_size"])
        self.eps = float(cfg["rms_norm_eps"])
        maxpos = int(cfg.get("max_position_embeddings") or CONTEXT_CAP)
        if context_window is None:
            context_window = min(maxpos, CONTEXT_CAP)
        context_window = int(context_window)
        if context_window < 1 or context_window > maxpos:
            raise PackError(f"--context-window {context_window} must be between 1 and the model's "
                            f"max_position_embeddings ({maxpos})")
        self.ctx = context_window
        self.chunk = max(1, min(int(prefill_chunk), self.ctx))
        self.max_binding = int(max_binding_size)
        self.max_buffer = int(max_buffer_size)
        compute = manifest.get("quantization", {}).get("compute", "f32")
        self.variants = ["f16", "f32"] if compute == "f16" else ["f32"]
        self.tensors = {t["name"]: t for t in manifest["tensors"]}
        self.kernels: dict[str, KernelSpec] = {}
        self.buffers: dict[str, dict] = {}
        self.blocks: dict[str, list[dict]] = {}
        self._check()

    # -- checks -------------------------------------------------------------------------

    def _check(self):
        H, HD, NH, NKV = self.H, self.HD, self.NH, self.NKV
        if NH % NKV:
            raise PackError(f"num_attention_heads {NH} is not a multiple of num_key_value_heads {NKV}")
        if HD % 8 or (HD * NH) % 8 or (HD * NKV) % 8 or H % 8 or self.I % 8:
            raise PackError("hidden, intermediate and head sizes must be multiples of 8 "
                            f"(hidden {H}, intermediate {self.I}, head_dim {HD})")
        biases = [n for n in self.tensors if n.endswith(".bias")]
        if biases:
            raise PackError(f"bias tensors are not supported by the llama plan yet: {biases[0]}")

    def tensor(self, name: str, shape: tuple[int, ...]) -> dict:
        t = self.tensors.get(name)
        if t is None:
            raise PackError(f"manifest has no tensor {name}")
        if tuple(t["shape"]) != tuple(shape):
            raise PackError(f"tensor {name} has shape {t['shape']}, expected {list(shape)}")
        if t["format"] not in WEIGHT_PARTS:
            raise PackError(f"tensor {name}: no kernels for weight format {t['format']!r}")
        if len(shape) == 2 and shape[1] % 8:
            raise PackError(f"tensor {name}: input dimension {shape[1]} is not a multiple of 8")
        return t

    # -- buffers ------------------------------------------------------------------------

    def act(self, name: str, elements: int, kind: str = "activation", dtype: str = "act") -> str:
        self.buffers[name] = {"kind": kind, "dtype": dtype, "elements": int(elements)}
        return name

    def weight_blocks(self, name: str) -> list[dict]:
        """Row blocks of a tensor: [{"row0", "rows", "parts": {part: buffer}}]; one block
        unless a part is larger than the binding or buffer limit."""
        if name in self.blocks:
            return self.blocks[name]
        t = self.tensors[name]
        rows = int(t["shape"][0]) if len(t["shape"]) == 2 else 1
        parts = {p["name"]: p for p in t["parts"]}
        want = WEIGHT_PARTS[t["format"]]
        if set(parts) != set(want):
            raise PackError(f"tensor {name}: parts {sorted(parts)} do not match format {t['format']}")
        limit = min(self.max_binding, self.max_buffer)
        max_rows = rows
        if len(t["shape"]) == 2:  # matvec / matmul workgroup counts stay within limits
            max_rows = min(rows, MAX_WORKGROUPS * MATVEC_ROWS)
        row_bytes = {}
        for pname, p in parts.items():
            if p["bytes"] % rows:
                raise PackError(f"tensor {name}: part {pname} is not made of {rows} equal rows")
            row_bytes[pname] = p["bytes"] // rows
        if all(align16(p["bytes"]) <= limit for p in parts.values()) and max_rows == rows:
            per_block = rows
        else:
            per_block = min(limit // rb for rb in row_bytes.values())
            per_block = min(per_block, max_rows) // BLOCK_ROW_MULTIPLE * BLOCK_ROW_MULTIPLE
            if per_block == 0:
                raise PackError(f"tensor {name}: {BLOCK_ROW_MULTIPLE} rows exceed the binding limit "
                                f"of {limit} bytes")
        blocks = []
        for i, row0 in enumerate(range(0, rows, per_block)):
            n = min(per_block, rows - row0)
            names = {}
            for pname in want:
                bname = f"{name}:{pname}" if per_block == rows else f"{name}:{pname}:{i}"
                self.buffers[bname] = {"kind": "weight", "tensor": name, "part": pname,
                                       "offset": row0 * row_bytes[pname], "bytes": n * row_bytes[pname]}
                names[pname] = bname
            blocks.append({"row0": row0, "rows": n, "parts": names})
        self.blocks[name] = blocks
        return blocks

    # -- kernels ------------------------------------------------------------------------

    def kernel(self, name: str, template: str, consts: dict | None = None, fmt: str | None = None) -> str:
        if name not in self.kernels:
            self.kernels[name] = KernelSpec(name, template, dict(consts or {}), fmt)
        return name

    @staticmethod
    def grid(n: str, wg: int) -> list[str]:
        """Workgroup counts covering n threads, folded into y above the x limit."""
        return [f"min(cdiv({n}, {wg}), {MAX_WORKGROUPS})", f"cdiv(cdiv({n}, {wg}), {MAX_WORKGROUPS})", "1"]

    # -- ops ----------------------------------------------------------------------------

    def linear(self, out: list, label: str, tname: str, x: str, y: str, mode: str, out_type: str = "act",
               single_row: bool = False):
        t = self.tensors[tname]
        N, K = t["shape"]
        fmt = t["format"]
        template = "matmul" if mode == "prefill" and not single_row else "matvec"
        suffix = ".f32out" if out_type == "f32" else ""
        kname = self.kernel(f"{template}.{fmt}.k{K}.n{N}{suffix}", template,
                            {"K": K, "N": N, "OUT": out_type}, fmt)
        blocks = self.weight_blocks(tname)
        for b in blocks:
            binds = [[1, x], [2, y]] + [[8 + i, b["parts"][p]] for i, p in enumerate(WEIGHT_PARTS[fmt])]
            seq = "1" if single_row else "seq_len"
            if template == "matmul":
                wg = [str(-(-b["rows"] // TILE_N)), f"cdiv({seq}, {TILE_M})", "1"]
            else:
                wg = [str(-(-b["rows"] // MATVEC_ROWS)), seq, "1"]
            lab = label if len(blocks) == 1 else f"{label} rows {b['row0']}+{b['rows']}"
            out.append({"kernel": kname, "label": lab, "bindings": binds,
                        "uniforms": [seq, str(b["row0"]), str(b["rows"])], "workgroups": wg})

    def rmsnorm(self, out: list, label: str, tname: str, x: str, y: str, last_only: bool = False):
        self.tensor(tname, (self.H,))
        kname = self.kernel(f"rmsnorm.h{self.H}", "rmsnorm", {"H": self.H, "EPS": self.eps})
        (b,) = self.weight_blocks(tname)
        out.append({"kernel": kname, "label": label, "bindings": [[1, x], [2, y], [8, b["parts"]["weight"]]],
                    "uniforms": ["seq_len - 1" if last_only else "0"],
                    "workgroups": ["1" if last_only else "seq_len", "1", "1"]})

    def elementwise(self, out: list, label: str, template: str, binds: list, n: str, extra: list | None = None):
        kname = self.kernel(template, template)
        wg = TEMPLATES[template]["workgroup_size"][0]
        out.append({"kernel": kname, "label": label, "bindings": binds, "uniforms": [n] + (extra or []),
                    "workgroups": self.grid(n, wg)})

    # -- the model ----------------------------------------------------------------------

    def build(self) -> tuple[dict, list[KernelSpec]]:
        H, I, NH, NKV, HD, V, C = self.H, self.I, self.NH, self.NKV, self.HD, self.V, self.chunk
        KVD = NKV * HD
        emb = self.tensor("model.embed_tokens.weight", (V, H))
        if "lm_head.weight" in self.tensors:
            head = "lm_head.weight"
            self.tensor(head, (V, H))
        elif self.cfg.get("tie_word_embeddings", True):
            head = "model.embed_tokens.weight"
        else:
            raise PackError("manifest has no lm_head.weight and tie_word_embeddings is false")
        for i in range(self.L):
            p = f"model.layers.{i}."
            for n, shape in [("self_attn.q_proj", (NH * HD, H)), ("self_attn.k_proj", (KVD, H)),
                             ("self_attn.v_proj", (KVD, H)), ("self_attn.o_proj", (H, NH * HD)),
                             ("mlp.gate_proj", (I, H)), ("mlp.up_proj", (I, H)), ("mlp.down_proj", (H, I))]:
                self.tensor(p + n + ".weight", shape)
        self.tensor("model.norm.weight", (H,))

        self.act("tokens", C, kind="input", dtype="u32")
        self.act("x", C * H, dtype="f32")  # the residual stream: f32 in both variants
        for name, n in [("xn", C * H), ("q", C * NH * HD), ("k", C * KVD), ("v", C * KVD),
                        ("attn", C * NH * HD), ("o", C * H), ("gate", C * I), ("up", C * I), ("x_last", H)]:
            self.act(name, n)
        max_splits = -(-self.ctx // ATTN_SPLIT)
        self.act("attn_part", NH * max_splits * (HD + 2), dtype="f32")
        self.act("logits", V, kind="output", dtype="f32")
        for i in range(self.L):
            self.act(f"k_cache.{i}", self.ctx * KVD, kind="kv_cache")
            self.act(f"v_cache.{i}", self.ctx * KVD, kind="kv_cache")

        inv_freq = rope_inv_freq(self.cfg.get("rope") or {"type": "default", "theta": 10000.0}, HD)
        rope_k = self.kernel(f"rope.h{NH}.kv{NKV}.d{HD}", "rope", {
            "NH": NH, "NKV": NKV, "HD": HD, "HALF": HD // 2,
            "INV_FREQ": ", ".join(f"{float(v):.9e}" for v in inv_freq)})
        attn_k = self.kernel(f"attention.h{NH}.kv{NKV}.d{HD}", "attention",
                             {"NH": NH, "NKV": NKV, "HD": HD, "SCALE": float(HD ** -0.5)})

        split = {"NH": NH, "NKV": NKV, "HD": HD, "SCALE": float(HD ** -0.5), "SPLIT": ATTN_SPLIT,
                 "MAX_SPLITS": max_splits}
        attn_dec = self.kernel(f"attention_decode.h{NH}.kv{NKV}.d{HD}.s{max_splits}", "attention_decode", split)
        attn_comb = self.kernel(f"attention_combine.h{NH}.d{HD}.s{max_splits}", "attention_combine",
                                {"HD": HD, "SPLIT": ATTN_SPLIT, "MAX_SPLITS": max_splits})

        entries = {}
        for mode in ("prefill", "decode"):
            d: list[dict] = []
            fmt = emb["format"]
            ek = self.kernel(f"embedding.{fmt}.k{H}", "embedding", {"K": H}, fmt)
            blocks = self.weight_blocks("model.embed_tokens.weight")
            for b in blocks:
                binds = [[1, "tokens"], [2, "x"]] + [[8 + j, b["parts"][p]] for j, p in enumerate(WEIGHT_PARTS[fmt])]
                d.append({"kernel": ek, "label": "embed" if len(blocks) == 1 else f"embed rows {b['row0']}+{b['rows']}",
                          "bindings": binds, "uniforms": ["seq_len", str(b["row0"]), str(b["rows"])],
                          "workgroups": [str(-(-(H // 8) // 64)), "seq_len", "1"]})
            for i in range(self.L):
                p = f"model.layers.{i}."
                lp = f"layer {i} "
                self.rmsnorm(d, lp + "input_layernorm", p + "input_layernorm.weight", "x", "xn")
                self.linear(d, lp + "q_proj", p + "self_attn.q_proj.weight", "xn", "q", mode)
                self.linear(d, lp + "k_proj", p + "self_attn.k_proj.weight", "xn", "k", mode)
                self.linear(d, lp + "v_proj", p + "self_attn.v_proj.weight", "xn", "v", mode)
                d.append({"kernel": rope_k, "label": lp + "rope", "bindings": [[1, "q"], [2, "k"]],
                          "uniforms": ["seq_len", "past_len"],
                          "workgroups": self.grid(f"seq_len * {(NH + NKV) * (HD // 2)}", 64)})
                self.elementwise(d, lp + "kv_append", "kv_append",
                                 [[1, "k"], [2, "v"], [3, f"k_cache.{i}"], [4, f"v_cache.{i}"]],
                                 f"seq_len * {KVD}", [f"past_len * {KVD}"])
                if mode == "prefill":
                    d.append({"kernel": attn_k, "label": lp + "attention",
                              "bindings": [[1, "q"], [2, f"k_cache.{i}"], [3, f"v_cache.{i}"], [4, "attn"]],
                              "uniforms": ["seq_len", "past_len"], "workgroups": [str(NH), "seq_len", "1"]})
                else:  # split over the cache, then merge the splits
                    d.append({"kernel": attn_dec, "label": lp + "attention (splits)",
                              "bindings": [[1, "q"], [2, f"k_cache.{i}"], [3, f"v_cache.{i}"], [4, "attn_part"]],
                              "uniforms": ["past_len"],
                              "workgroups": [str(NH), f"cdiv(past_len + 1, {ATTN_SPLIT})", "1"]})
                    d.append({"kernel": attn_comb, "label": lp + "attention (combine)",
                              "bindings": [[1, "attn_part"], [2, "attn"]], "uniforms": ["past_len"],
                              "workgroups": [str(NH), "1", "1"]})
                self.linear(d, lp + "o_proj", p + "self_attn.o_proj.weight", "attn", "o", mode)
                self.elementwise(d, lp + "residual", "add", [[1, "x"], [2, "o"]], f"seq_len * {H}")
                self.rmsnorm(d, lp + "post_attention_layernorm", p + "post_attention_layernorm.weight", "x", "xn")
                self.linear(d, lp + "gate_proj", p + "mlp.gate_proj.weight", "xn", "gate", mode)
                self.linear(d, lp + "up_proj", p + "mlp.up_proj.weight", "xn", "up", mode)
                self.elementwise(d, lp + "silu_mul", "silu_mul", [[1, "gate"], [2, "up"]], f"seq_len * {I}")
                self.linear(d, lp + "down_proj", p + "mlp.down_proj.weight", "gate", "o", mode)
                self.elementwise(d, lp + "residual", "add", [[1, "x"], [2, "o"]], f"seq_len * {H}")
            self.rmsnorm(d, "final norm (last token)", "model.norm.weight", "x", "x_last", last_only=True)
            self.linear(d, "lm_head", head, "x_last", "logits", mode, out_type="f32", single_row=True)
            entries[mode] = {"max_seq_len": C if mode == "prefill" else 1, "dispatches": d}

        kernels = list(self.kernels.values())
        plan = {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "architecture": "llama",
            "context_window": self.ctx,
            "prefill_chunk": C,
            "dims": ["seq_len", "past_len"],
            "variant_order": list(self.variants),
            "variants": {},
            "requirements": {},
            "inputs": {"tokens": "tokens"},
            "outputs": {"logits": "logits"},
            "kernels": {k.name: k.to_json(self.variants) for k in kernels},
            "buffers": self.buffers,
            "entries": entries,
        }
        self._limits(plan, kernels)
        return plan, kernels

    # -- limits -------------------------------------------------------------------------

    def _limits(self, plan: dict, kernels: list[KernelSpec]):
        for name, buf in self.buffers.items():
            size = buffer_size(buf, "f32")
            if size > self.max_buffer or size > self.max_binding:
                what = "lower --context-window" if buf["kind"] == "kv_cache" else "lower the prefill chunk"
                raise PackError(f"buffer {name} needs {size} bytes, over the device limit "
                                f"(binding {self.max_binding}, buffer {self.max_buffer}); {what}")
        max_wg = 1
        envs = {"prefill": [(1, 0), (self.chunk, 0), (self.chunk, self.ctx - self.chunk)],
                "decode": [(1, 0), (1, self.ctx - 1)]}
        for mode, entry in plan["entries"].items():
            for seq_len, past_len in envs[mode]:
                env = {"seq_len": seq_len, "past_len": past_len}
                for disp in entry["dispatches"]:
                    for e in disp["workgroups"]:
                        max_wg = max(max_wg, evaluate(e, env))
                    for e in disp["uniforms"]:
                        evaluate(e, env)
        if max_wg > MAX_WORKGROUPS:
            raise PackError(f"a dispatch needs {max_wg} workgroups in one dimension (limit {MAX_WORKGROUPS})")
        kernel_limits = {
            "maxComputeWorkgroupStorageSize": max(k.workgroup_bytes() for k in kernels),
            "maxComputeInvocationsPerWorkgroup": max(math.prod(k.info["workgroup_size"]) for k in kernels),
            "maxComputeWorkgroupSizeX": max(k.info["workgroup_size"][0] for k in kernels),
            "maxComputeWorkgroupSizeY": max(k.info["workgroup_size"][1] for k in kernels),
            "maxStorageBuffersPerShaderStage": max(sum(t != "uniform" for _, t in k.bindings()) for k in kernels),
            "maxBindingsPerBindGroup": max(n for k in kernels for n, _ in k.bindings()) + 1,
            "maxComputeWorkgroupsPerDimension": max_wg,
        }
        for variant in self.variants:
            sizes = {n: buffer_size(b, variant) for n, b in self.buffers.items()}
            limits = {"maxStorageBufferBindingSize": max(sizes.values()), "maxBufferSize": max(sizes.values()),
                      **kernel_limits}
            kinds = {}
            for n, b in self.buffers.items():
                kinds[b["kind"]] = kinds.get(b["kind"], 0) + sizes[n]
            plan["variants"][variant] = {
                "features": ["shader-f16"] if variant == "f16" else [],
                "limits": limits,
                "memory": {"weights_bytes": kinds.get("weight", 0), "kv_cache_bytes": kinds.get("kv_cache", 0),
                           "activation_bytes": sum(v for k, v in kinds.items() if k not in ("weight", "kv_cache"))},
            }
        base = plan["variants"]["f32"]
        plan["requirements"] = {
            "features": [],
            "optional_features": ["shader-f16"] if "f16" in self.variants else [],
            "limits": dict(base["limits"]),
        }


def build_plan(manifest: dict, *, context_window: int | None = None,
               max_binding_size: int = DEFAULT_MAX_BINDING, max_buffer_size: int = DEFAULT_MAX_BUFFER,
               prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> tuple[dict, list[KernelSpec]]:
    """manifest dict -> (plan JSON dict, kernel specs). Raises PackError."""
    return _Builder(manifest, context_window, max_binding_size, max_buffer_size, prefill_chunk).build()
