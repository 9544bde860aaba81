"""Architecture -> execution plan (docs/plan.md).

build_plan(manifest) lowers the graph of the model's architecture (packager.models) into
the plan JSON that the runtimes interpret, and the list of specialized kernels it uses,
given the bundle's tensor index (formats, parts) and device limits. The plan is data:
ordered dispatches whose uniform values and workgroup counts are expressions
(packager/plan_expr.py) over the dynamic dimensions `seq_len` and `past_len`, so one
compiled kernel set serves every prompt length.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

from .compile import ACT_BYTES, DEFAULT_MAX_BINDING, DEFAULT_MAX_BUFFER, KernelSpec
from .errors import PackError
from .kernel_table import GLU_ACTS, TEMPLATES, WEIGHT_BINDING0, WEIGHT_FORMATS, kernel_consts
from .kernel_table import bindings as kernel_bindings
from .models import ModelConfig, Op, config_from_manifest, definition
from .plan_expr import evaluate
from .rope import rope_inv_freq

PLAN_FORMAT = "llmpack-plan"
PLAN_VERSION = 1
DEFAULT_PREFILL_CHUNK = 128
DEFAULT_VERIFY_CHUNK = 16  # most tokens of one "verify" call (speculative decoding's drafts + 1)
ROWS_LOGITS = "logits_rows"  # the "verify" entry's output: f32 [verify_chunk, vocab], a row per token
MAX_WORKGROUPS = 65535  # WebGPU's default maxComputeWorkgroupsPerDimension
BLOCK_ROW_MULTIPLE = 64  # row blocks of a split weight are multiples of this
DTYPE_BYTES = {"u32": 4, "f32": 4}
TOPK_CANDIDATES = 64  # K of the optional "topk" entry: the candidates a top-k / top-p step reads back
TOPK_MIN_PER_THREAD = 8  # logits per thread of topk_partial (more when the vocabulary needs it)
MAX_STORAGE_BUFFERS = 8  # WebGPU's default maxStorageBuffersPerShaderStage: fused kernels stay within it


def align16(n: int) -> int:
    return (n + 15) // 16 * 16


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def buffer_size(buf: dict, variant: str) -> int:
    """Bytes to allocate for a plan buffer (docs/plan.md)."""
    if buf["kind"] == "weight":
        return align16(buf["bytes"])
    item = ACT_BYTES[variant] if buf["dtype"] == "act" else DTYPE_BYTES[buf["dtype"]]
    return align16(buf["elements"] * item)


def topk_groups(vocab: int) -> tuple[int, int]:
    """(E, groups) of the "topk" entry: topk_partial's logits per thread and workgroup count,
    with at most as many groups as topk_merge has threads."""
    wg = tile("topk_partial", "WG")
    per_thread = max(TOPK_MIN_PER_THREAD, cdiv(cdiv(vocab, wg), tile("topk_merge", "WG")))
    return per_thread, cdiv(vocab, wg * per_thread)


def tile(template: str, name: str) -> int:
    """A template's tile constant or workgroup width, from the kernel table."""
    t = TEMPLATES[template]
    return t.tiles[name] if name in t.tiles else t.workgroup_size[0]


# ---------------------------------------------------------------------------------------
# plan builder

class _Builder:
    def __init__(self, manifest: dict, config: ModelConfig, max_binding_size, max_buffer_size, prefill_chunk,
                 fuse: bool = True, verify_chunk: int | None = None):
        self.c = c = config
        # fused lowerings (docs/plan.md, "Fused dispatches"): each is called as
        # fusion(builder, out, ops, i, mode) with ops a list of (op, layer or None); it appends the
        # dispatches of ops[i], ops[i + 1], ... it fuses and returns how many ops it consumed, or
        # appends nothing and returns 0 when ops[i] does not start its pattern here
        self.fusions = list(FUSIONS) if fuse else []
        self.arch = definition(c.architecture)
        self.graph = self.arch.graph(c)
        self.ctx = c.context_window
        self.chunk = max(1, min(int(prefill_chunk), self.ctx))
        self.max_binding = int(max_binding_size)
        self.max_buffer = int(max_buffer_size)
        self.verify_chunk = self._verify_chunk(verify_chunk)
        # the "verify" entry's head runs over every row: each last-token activation of the head
        # (the final norm's output) gets a per-token twin "<name>_rows", the logits "logits_rows"
        self.rows_names: dict[str, str] = {}
        if self.verify_chunk:
            self._add_row_twins()
        compute = manifest.get("quantization", {}).get("compute", "f32")
        self.variants = ["f16", "f32"] if compute == "f16" else ["f32"]
        self.tensors = {t["name"]: t for t in manifest["tensors"]}
        self.kernels: dict[str, KernelSpec] = {}
        self.buffers: dict[str, dict] = {}
        self.blocks: dict[str, list[dict]] = {}
        self._check()

    def _verify_chunk(self, asked: int | None) -> int:
        """Tokens of the verify entry: as asked (0: none; at most the prefill chunk), by default
        the least of 16, the prefill chunk and the rows whose logits fit one buffer."""
        if asked is None:
            fit = (min(self.max_binding, self.max_buffer) // 16 * 16) // (4 * self.c.vocab_size)
            return min(DEFAULT_VERIFY_CHUNK, self.chunk, fit)
        if not 0 <= int(asked) <= self.chunk:
            raise PackError(f"verify chunk {asked} must lie between 0 (no verify entry) and the prefill "
                            f"chunk ({self.chunk}, at most the context window)")
        return int(asked)

    def _add_row_twins(self):
        twins = [dataclasses.replace(a, name=f"{a.name}_rows", last_token=False)
                 for a in self.graph.activations if a.last_token]
        taken = {a.name for a in self.graph.activations} | {"tokens", "logits"}
        clash = [a.name for a in twins if a.name in taken] + ([ROWS_LOGITS] if ROWS_LOGITS in taken else [])
        if clash:
            raise PackError(f"the {self.arch.name} graph has an activation named {clash[0]}, which the verify "
                            "entry needs for itself")
        self.rows_names = {a.name: f"{a.name}_rows" for a in self.graph.activations if a.last_token}
        self.rows_names["logits"] = ROWS_LOGITS
        self.graph = dataclasses.replace(self.graph, activations=self.graph.activations + tuple(twins))

    # -- checks -------------------------------------------------------------------------

    def _check(self):
        c = self.c
        H, HD, NH, NKV, FF = c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads, \
            c.intermediate_size
        if NH % NKV:
            raise PackError(f"num_attention_heads {NH} is not a multiple of num_key_value_heads {NKV}")
        if HD % 8 or (HD * NH) % 8 or (HD * NKV) % 8 or H % 8 or FF % 8:
            raise PackError("hidden, intermediate and head sizes must be multiples of 8 "
                            f"(hidden {H}, intermediate {FF}, head_dim {HD})")
        expected = self.arch.tensors(c)
        for t in expected:
            self.tensor(t.name, t.shape)
        names = {t.name for t in expected}
        extra = [n for n in self.tensors if n not in names]
        if extra:
            raise PackError(f"manifest tensor {extra[0]} is not in the {self.arch.name} tensor table "
                            "(not supported by this architecture yet)")

    def tensor(self, name: str, shape: tuple[int, ...]) -> dict:
        t = self.tensors.get(name)
        if t is None:
            raise PackError(f"manifest has no tensor {name}")
        if tuple(t["shape"]) != tuple(shape):
            raise PackError(f"tensor {name} has shape {t['shape']}, expected {list(shape)}")
        if t["format"] not in WEIGHT_FORMATS:
            raise PackError(f"tensor {name}: no kernels for weight format {t['format']!r}")
        if len(shape) == 2 and shape[1] % 8:
            raise PackError(f"tensor {name}: input dimension {shape[1]} is not a multiple of 8")
        return t

    # -- buffers ------------------------------------------------------------------------

    def act(self, name: str, elements: int, kind: str = "activation", dtype: str = "act") -> str:
        self.buffers[name] = {"kind": kind, "dtype": dtype, "elements": int(elements)}
        return name

    def weight_blocks(self, name: str, view: tuple[int, int] | None = None) -> list[dict]:
        """Row blocks of a tensor: [{"row0", "rows", "parts": [buffer per part]}]; one block
        unless a part is larger than the binding or buffer limit. `view`: rows [a, b) only
        (a linear op's `rows`; row0 counts from a), buffers `<tensor>[a..b]:<part>[:<i>]`."""
        key = (name, view)
        if key in self.blocks:
            return self.blocks[key]
        t = self.tensors[name]
        all_rows = int(t["shape"][0]) if len(t["shape"]) == 2 else 1
        first, end = view or (0, all_rows)
        if not (0 <= first < end <= all_rows):
            raise PackError(f"tensor {name}: rows {first}..{end} are not within its {all_rows} rows")
        rows = end - first
        base = name if view is None else f"{name}[{first}..{end}]"
        parts = {p["name"]: p for p in t["parts"]}
        want = WEIGHT_FORMATS[t["format"]].parts
        if set(parts) != set(want):
            raise PackError(f"tensor {name}: parts {sorted(parts)} do not match format {t['format']}")
        limit = min(self.max_binding, self.max_buffer)
        max_rows = rows
        if len(t["shape"]) == 2:  # matvec / matmul workgroup counts stay within limits
            max_rows = min(rows, MAX_WORKGROUPS * tile("matvec", "ROWS"))
        row_bytes = {}
        for pname, p in parts.items():
            if p["bytes"] % all_rows:
                raise PackError(f"tensor {name}: part {pname} is not made of {all_rows} equal rows")
            row_bytes[pname] = p["bytes"] // all_rows
        if all(align16(rows * rb) <= limit for rb in row_bytes.values()) and max_rows == rows:
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
            names = []
            for pname in want:
                bname = f"{base}:{pname}" if per_block == rows else f"{base}:{pname}:{i}"
                self.buffers[bname] = {"kind": "weight", "tensor": name, "part": pname,
                                       "offset": (first + row0) * row_bytes[pname], "bytes": n * row_bytes[pname]}
                names.append(bname)
            blocks.append({"row0": row0, "rows": n, "parts": names})
        self.blocks[key] = blocks
        return blocks

    # -- kernels and dispatches ---------------------------------------------------------

    def kernel(self, name: str, template: str, params: dict | None = None, fmt: str | None = None) -> str:
        spec = KernelSpec(name, template, kernel_consts(template, params or {}), fmt)
        if self.kernels.setdefault(name, spec) != spec:  # one name, one specialization
            raise PackError(f"kernel {name} would be specialized twice, differently")
        return name

    @staticmethod
    def binds(template: str, parts: list[str] = (), **buffers: str) -> list:
        """[binding, buffer] pairs: the template's bindings by name (kernel table), then the
        weight parts."""
        out = [[b.binding, buffers[b.name]] for b in TEMPLATES[template].bindings]
        return out + [[WEIGHT_BINDING0 + i, p] for i, p in enumerate(parts)]

    @staticmethod
    def block_label(label: str, blocks: list[dict], b: dict) -> str:
        return label if len(blocks) == 1 else f"{label} rows {b['row0']}+{b['rows']}"

    @staticmethod
    def grid(n: str, wg: int) -> list[str]:
        """Workgroup counts covering n threads, folded into y above the x limit."""
        return [f"min(cdiv({n}, {wg}), {MAX_WORKGROUPS})", f"cdiv(cdiv({n}, {wg}), {MAX_WORKGROUPS})", "1"]

    def elementwise(self, out: list, label: str, template: str, binds: list, n: str, extra: list | None = None):
        kname = self.kernel(template, template)
        out.append({"kernel": kname, "label": label, "bindings": binds, "uniforms": [n] + (extra or []),
                    "workgroups": self.grid(n, tile(template, "WG"))})

    def width(self, activation: str) -> int:
        return self.c.vocab_size if activation in ("logits", ROWS_LOGITS) else self.graph.activation(activation).width

    def per_token(self, activation: str) -> bool:
        if activation in ("tokens", ROWS_LOGITS):
            return True
        return activation != "logits" and not self.graph.activation(activation).last_token

    # -- lowering the graph's ops ---------------------------------------------------------

    def lower_graph(self, mode: str) -> list[dict]:
        """The dispatches of one entry: the graph's ops in order (embedding, layers, head), where
        a run of ops that one of `FUSIONS` matches is lowered by it as one (or fewer) dispatches.
        mode "verify" is "prefill" (the fusions see no "decode") with the head over every row
        (its last-token activations and the logits replaced by their per-token twins) and its
        linear ops lowered for a few tokens (matvec_batch instead of matmul's tiles)."""
        g = self.graph
        head = g.head
        if mode == "verify":
            head = tuple(self.rows_op(op) for op in g.head)
        ops = [(op, None) for op in g.embed] + [(op, i) for i, layer in enumerate(g.layers) for op in layer] \
            + [(op, None) for op in head]
        out: list[dict] = []
        i = 0
        while i < len(ops):
            used = 0
            for fusion in self.fusions:
                used = fusion(self, out, ops, i, mode)
                if used:
                    break
            if not used:
                self.lower(out, ops[i][0], mode, ops[i][1])
                used = 1
            i += used
        return out

    def rows_op(self, op: Op) -> Op:
        """A head op with its last-token activations and the logits replaced by the per-token twins."""
        def sub(name: str) -> str:
            return self.rows_names.get(name, name)
        return dataclasses.replace(op, inputs=tuple(sub(n) for n in op.inputs), out=sub(op.out),
                                   label=op.label.replace("(last token)", "(every token)"))

    def lower(self, out: list, op: Op, mode: str, layer: int | None):
        """Append the dispatches of one op of the graph (labels: "layer <i> <op label>")."""
        lower = getattr(self, f"_{op.kind}", None)
        if lower is None:
            raise PackError(f"the plan has no lowering for op {op.kind!r}")
        lower(out, op, "" if layer is None else f"layer {layer} ", mode, layer)

    def _embedding(self, out, op, prefix, mode, layer):
        label = prefix + op.label
        t = self.tensors[op.weight]
        fmt, K = t["format"], int(t["shape"][1])
        scale = 1.0 if op.scale is None else float(op.scale)
        kname = self.kernel(f"embedding.{fmt}.k{K}" + ("" if scale == 1.0 else ".scaled"), "embedding",
                            {"K": K, "SCALE": scale}, fmt)
        blocks = self.weight_blocks(op.weight)
        for b in blocks:
            out.append({"kernel": kname, "label": self.block_label(label, blocks, b),
                        "bindings": self.binds("embedding", b["parts"], tokens=op.inputs[0], y=op.out),
                        "uniforms": ["seq_len", str(b["row0"]), str(b["rows"])],
                        "workgroups": [str(cdiv(K // 8, tile("embedding", "WG"))), "seq_len", "1"]})

    def _rmsnorm(self, out, op, prefix, mode, layer):
        """One workgroup per row of H = len(weight) values: a token's row, or each head of it."""
        label = prefix + op.label
        H = int(self.tensors[op.weight]["shape"][0])
        width = self.width(op.inputs[0])
        if width % H or self.width(op.out) != width:
            raise PackError(f"rmsnorm {op.label}: rows of {H} values do not divide {op.inputs[0]} ({width})")
        per_token = width // H
        x_type = self.buffers[op.inputs[0]]["dtype"]
        kname = self.kernel(f"rmsnorm.h{H}" + ("" if x_type == "f32" else f".{x_type}in"), "rmsnorm",
                            {"H": H, "EPS": float(self.c.rms_norm_eps), "IN": x_type})
        (b,) = self.weight_blocks(op.weight)
        last_only = self.per_token(op.inputs[0]) and not self.per_token(op.out)
        times = "" if per_token == 1 else f" * {per_token}"
        last_row0 = f"(seq_len - 1){times}" if times else "seq_len - 1"
        in_row0, rows = (last_row0, str(per_token)) if last_only else ("0", f"seq_len{times}")
        out.append({"kernel": kname, "label": label,
                    "bindings": self.binds("rmsnorm", x=op.inputs[0], y=op.out, w=b["parts"][0]),
                    "uniforms": [in_row0], "workgroups": [rows, "1", "1"]})

    def _linear(self, out, op, prefix, mode, layer):
        label = prefix + op.label
        t = self.tensors[op.weight]
        N, K = t["shape"]
        if op.rows is not None:  # a view of a fused matrix: its rows [a, b) make the output
            N = op.rows[1] - op.rows[0]
        if self.width(op.out) != N:
            raise PackError(f"linear {op.label}: {N} output rows, but {op.out} has {self.width(op.out)} values")
        fmt = t["format"]
        single_row = not self.per_token(op.inputs[0])  # e.g. the logits of the last token
        if single_row or mode == "decode":
            template = "matvec"
        elif mode == "verify":
            template = "matvec_batch"
        else:
            template = "matmul"
        out_type = self.buffers[op.out]["dtype"]
        suffix = ".f32out" if out_type == "f32" else ""
        kname = self.kernel(f"{template}.{fmt}.k{K}.n{N}{suffix}", template, {"K": K, "N": N, "OUT": out_type}, fmt)
        blocks = self.weight_blocks(op.weight, op.rows)
        seq = "1" if single_row else "seq_len"
        for b in blocks:
            if template == "matmul":
                wg = [str(cdiv(b["rows"], tile("matmul", "TILE_N"))), f"cdiv({seq}, {tile('matmul', 'TILE_M')})", "1"]
            elif template == "matvec_batch":
                wg = [str(cdiv(b["rows"], tile("matvec_batch", "ROWS"))), "1", "1"]
            else:
                wg = [str(cdiv(b["rows"], tile("matvec", "ROWS"))), seq, "1"]
            out.append({"kernel": kname, "label": self.block_label(label, blocks, b),
                        "bindings": self.binds(template, b["parts"], x=op.inputs[0], y=op.out),
                        "uniforms": [seq, str(b["row0"]), str(b["rows"])], "workgroups": wg})

    def _rope(self, out, op, prefix, mode, layer):
        """The rotation of the first rotary_dim values of every head of q and k (all of
        them unless partial), the frequency table and cos/sin factor baked in."""
        label = prefix + op.label
        c = self.c
        NH, NKV, HD = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        consts, suffix = self.rope_consts(op)
        kname = self.kernel(f"rope.h{NH}.kv{NKV}.d{HD}{suffix}", "rope", {"NH": NH, "NKV": NKV, "HD": HD, **consts})
        q, k = op.inputs
        out.append({"kernel": kname, "label": label, "bindings": self.binds("rope", q=q, k=k),
                    "uniforms": ["seq_len", "past_len"],
                    "workgroups": self.grid(f"seq_len * {(NH + NKV) * consts['HALF']}", tile("rope", "WG"))})

    def rope_consts(self, op: Op) -> tuple[dict, str]:
        """({HALF, SCALE, INV_FREQ} of a rope op, its kernel-name suffix): the first 2 HALF values
        of a head rotate (".r<2 HALF>" when that is not all of them); a rope of its own (not the
        config's) adds a hash of its parameters."""
        rope = op.rope or self.c.rope
        inv_freq = [float(v) for v in rope_inv_freq(rope, self.c.head_dim)]
        half = len(inv_freq)
        own = "" if rope == self.c.rope else "." + hashlib.sha256(json.dumps(rope.to_json()).encode()).hexdigest()[:8]
        suffix = ("" if 2 * half == self.c.head_dim else f".r{2 * half}") + own
        return {"HALF": half, "SCALE": rope.attention_scaling, "INV_FREQ": inv_freq}, suffix

    def _attention(self, out, op, prefix, mode, layer):
        """The KV-cache append, then attention over the cache (in decode: split over the
        cache, then the splits merged)."""
        NKV, HD = self.c.num_key_value_heads, self.c.head_dim
        _, k, v = op.inputs
        kc, vc = f"k_cache.{layer}", f"v_cache.{layer}"
        _, slots = self.cache_rows(op)
        kname = self.kernel(f"kv_append.r{slots}" if slots < self.ctx else "kv_append", "kv_append",
                            {"CACHE": slots * NKV * HD})
        out.append({"kernel": kname, "label": prefix + "kv_append",
                    "bindings": self.binds("kv_append", k=k, v=v, kc=kc, vc=vc),
                    "uniforms": [f"seq_len * {NKV * HD}", self.cache_dst(op)],
                    "workgroups": self.grid(f"seq_len * {NKV * HD}", tile("kv_append", "WG"))})
        self._attend(out, op, prefix, mode, layer)

    def cache_dst(self, op: Op) -> str:
        """The first cache element of the call's first token: its row (past_len % rows) times
        the row's NKV * HD values."""
        _, slots = self.cache_rows(op)
        row = f"(past_len % {slots})" if slots < self.ctx else "past_len"
        return f"{row} * {self.c.num_key_value_heads * self.c.head_dim}"

    def _attend(self, out, op, prefix, mode, layer):
        """The attention of an attention op over its layer's cache, k and v appended already."""
        label = prefix + op.label
        c = self.c
        NH, NKV, HD = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        q = op.inputs[0]
        kc, vc = f"k_cache.{layer}", f"v_cache.{layer}"
        window, slots = self.cache_rows(op)
        scale = float(HD ** -0.5 if op.scale is None else op.scale)
        cap = float(op.cap)
        variant = (f".w{window}" if window < self.ctx else "") + (".capped" if cap else "")
        common = {"NH": NH, "NKV": NKV, "HD": HD, "SCALE": scale, "SOFTCAP": cap, "WINDOW": window, "SLOTS": slots}
        if mode != "decode":
            kname = self.kernel(f"attention.h{NH}.kv{NKV}.d{HD}{variant}", "attention", common)
            out.append({"kernel": kname, "label": label,
                        "bindings": self.binds("attention", q=q, kc=kc, vc=vc, out=op.out),
                        "uniforms": ["seq_len", "past_len"], "workgroups": [str(NH), "seq_len", "1"]})
            return
        split, splits = tile("attention_decode", "SPLIT"), self.max_splits
        kname = self.kernel(f"attention_decode.h{NH}.kv{NKV}.d{HD}.s{splits}{variant}", "attention_decode",
                            {**common, "MAX_SPLITS": splits})
        keys = f"min(past_len + 1, {window})" if window < self.ctx else "past_len + 1"
        out.append({"kernel": kname, "label": label + " (splits)",
                    "bindings": self.binds("attention_decode", q=q, kc=kc, vc=vc, part="attn_part"),
                    "uniforms": ["past_len"], "workgroups": [str(NH), f"cdiv({keys}, {split})", "1"]})
        kname = self.kernel(f"attention_combine.h{NH}.d{HD}.s{splits}" + (f".w{window}" if window < self.ctx else ""),
                            "attention_combine", {"HD": HD, "WINDOW": window, "MAX_SPLITS": splits})
        out.append({"kernel": kname, "label": label + " (combine)",
                    "bindings": self.binds("attention_combine", part="attn_part", out=op.out),
                    "uniforms": ["past_len"], "workgroups": [str(NH), "1", "1"]})

    def cache_rows(self, op: Op) -> tuple[int, int]:
        """(keys per query, cache rows) of an attention op. A sliding-window layer's cache is a
        ring buffer of window + prefill_chunk rows (position j in row j % rows): a chunk's
        keys never overwrite a position that one of its queries still sees. A full cache (or
        a window that covers the context) is the context window."""
        if not op.window or op.window >= self.ctx:
            return self.ctx, self.ctx
        return op.window, min(self.ctx, op.window + self.chunk)

    def _in_place(self, op: Op):
        if op.out != op.inputs[0]:
            raise PackError(f"op {op.kind} ({op.label}) must write its first input: its kernel works in place")

    def _add(self, out, op, prefix, mode, layer):
        label = prefix + op.label
        self._in_place(op)
        a, b = op.inputs
        self.elementwise(out, label, "add", self.binds("add", x=a, y=b), f"seq_len * {self.width(a)}")

    def _bias_add(self, out, op, prefix, mode, layer):
        label = prefix + op.label
        self._in_place(op)
        (x,) = op.inputs
        W = self.width(x)
        if tuple(self.tensors[op.weight]["shape"]) != (W,):
            raise PackError(f"bias {op.weight} does not have {W} values (the width of {x})")
        (b,) = self.weight_blocks(op.weight)
        kname = self.kernel(f"bias_add.w{W}", "bias_add", {"W": W})
        out.append({"kernel": kname, "label": label, "bindings": self.binds("bias_add", x=x, b=b["parts"][0]),
                    "uniforms": [f"seq_len * {W}"], "workgroups": self.grid(f"seq_len * {W}", tile("bias_add", "WG"))})

    def _gelu_tanh_mul(self, out, op, prefix, mode, layer):
        label = prefix + op.label
        self._in_place(op)
        g, u = op.inputs
        self.elementwise(out, label, "gelu_tanh_mul", self.binds("gelu_tanh_mul", g=g, u=u),
                         f"seq_len * {self.width(g)}")

    def _softcap(self, out, op, prefix, mode, layer):
        """In place on f32 values: the logits (of the call's last token)."""
        self._in_place(op)
        (x,) = op.inputs
        if self.buffers[x]["dtype"] != "f32":
            raise PackError(f"softcap {op.label}: {x} must be f32 (the logits)")
        per_token = self.per_token(x)  # the logits: [vocab] of the last token
        n = f"seq_len * {self.width(x)}" if per_token else str(self.buffers[x]["elements"])
        kname = self.kernel(f"softcap.c{op.cap:g}", "softcap", {"CAP": float(op.cap)})
        out.append({"kernel": kname, "label": prefix + op.label, "bindings": self.binds("softcap", x=x),
                    "uniforms": [n], "workgroups": self.grid(n, tile("softcap", "WG"))})

    def _silu_mul(self, out, op, prefix, mode, layer):
        label = prefix + op.label
        self._in_place(op)
        g, u = op.inputs
        self.elementwise(out, label, "silu_mul", self.binds("silu_mul", g=g, u=u), f"seq_len * {self.width(g)}")

    # -- the model ----------------------------------------------------------------------

    def build(self) -> tuple[dict, list[KernelSpec]]:
        c, g, C = self.c, self.graph, self.chunk
        self.act("tokens", C, kind="input", dtype="u32")
        twins = set(self.rows_names.values())
        for a in g.activations:
            self.act(a.name, a.width * (1 if a.last_token else self.verify_chunk if a.name in twins else C),
                     dtype=a.dtype)
        attention_layers = [i for i, ops in enumerate(g.layers) if any(op.kind == "attention" for op in ops)]
        self.max_splits = cdiv(self.ctx, tile("attention_decode", "SPLIT"))
        if attention_layers:
            self.act("attn_part", c.num_attention_heads * self.max_splits * (c.head_dim + 2), dtype="f32")
        self.act("logits", c.vocab_size, kind="output", dtype="f32")
        if self.verify_chunk:
            self.act(ROWS_LOGITS, self.verify_chunk * c.vocab_size, kind="output", dtype="f32")
        rewind = None
        for i in attention_layers:
            (op,) = [op for op in g.layers[i] if op.kind == "attention"]
            window, rows = self.cache_rows(op)
            self.act(f"k_cache.{i}", rows * c.kv_size, kind="kv_cache")
            self.act(f"v_cache.{i}", rows * c.kv_size, kind="kv_cache")
            if rows < self.ctx:  # a ring buffer: a call may start at most rows - window + 1 positions back
                rewind = min(rewind or rows, rows - window + 1)

        entries = {}
        for mode in ("prefill", "decode"):
            entries[mode] = {"max_seq_len": C if mode == "prefill" else 1, "dispatches": self.lower_graph(mode)}
        entries["argmax"] = self.argmax_entry()
        if self.verify_chunk:  # docs/plan.md, "The optional verify entry"
            entries["verify"] = {"max_seq_len": self.verify_chunk, "dispatches": self.lower_graph("verify")}
            entries["verify_argmax"] = self.verify_argmax_entry()
        entries["topk"] = self.topk_entry()

        kernels = list(self.kernels.values())
        plan = {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "architecture": c.architecture,
            "context_window": self.ctx,
            "prefill_chunk": C,
            "dims": ["seq_len", "past_len"],
            "variant_order": list(self.variants),
            "variants": {},
            "requirements": {},
            "inputs": {"tokens": "tokens", "inv_temperature": "inv_temperature"},
            "outputs": {"logits": "logits", "next_token": "next_token", "topk": "topk",
                        **({ROWS_LOGITS: ROWS_LOGITS, "verify_tokens": "verify_tokens"} if self.verify_chunk else {})},
            "kernels": {k.name: k.to_json(self.variants) for k in kernels},
            "buffers": self.buffers,
            "entries": entries,
        }
        if rewind is not None:  # docs/plan.md, "Sliding-window layers"
            plan["kv_rewind_limit"] = rewind
        self._limits(plan, kernels)
        return plan, kernels

    def argmax_entry(self) -> dict:
        """The optional "argmax" entry (docs/plan.md): the greedy next token of the logits the
        last prefill or decode run wrote, [id, f32 bits] in `next_token`, so that a WebGPU
        greedy step reads back 4 bytes instead of the vocabulary's logits."""
        self.act("next_token", 2, kind="output", dtype="u32")
        kname = self.kernel("argmax", "argmax")
        return {"max_seq_len": 1, "dispatches": [
            {"kernel": kname, "label": "argmax", "bindings": self.binds("argmax", x="logits", out="next_token"),
             "uniforms": [str(self.c.vocab_size)], "workgroups": ["1", "1", "1"]}]}

    def verify_argmax_entry(self) -> dict:
        """The optional "verify_argmax" entry (docs/plan.md): the greedy token of every row of the
        logits the last verify run wrote, [id, f32 bits] per row in `verify_tokens` (the argmax
        kernel, one workgroup per row), so that greedy speculative decoding on WebGPU reads back
        8 bytes a row instead of the vocabulary's logits."""
        self.act("verify_tokens", 2 * self.verify_chunk, kind="output", dtype="u32")
        kname = self.kernel("argmax", "argmax")
        return {"max_seq_len": self.verify_chunk, "dispatches": [
            {"kernel": kname, "label": "argmax (rows)",
             "bindings": self.binds("argmax", x=ROWS_LOGITS, out="verify_tokens"),
             "uniforms": [str(self.c.vocab_size)], "workgroups": ["1", "seq_len", "1"]}]}

    def topk_entry(self) -> dict:
        """The optional "topk" entry (docs/plan.md): the K largest of the logits the last prefill or
        decode run wrote, best first, with the softmax denominator at the temperature the runtime
        writes into `inv_temperature` and the count of finite logits, in `topk`; a WebGPU top-k or
        top-p step reads back those 2 K + 2 words instead of the vocabulary's logits."""
        k, vocab = TOPK_CANDIDATES, self.c.vocab_size
        per_thread, groups = topk_groups(vocab)
        self.act("inv_temperature", 1, kind="input", dtype="f32")
        self.act("topk_part", groups * (2 * k + 4), dtype="u32")
        self.act("topk", 2 * k + 2, kind="output", dtype="u32")
        partial = self.kernel(f"topk_partial.k{k}.e{per_thread}", "topk_partial", {"K": k, "E": per_thread})
        merge = self.kernel(f"topk_merge.k{k}", "topk_merge", {"K": k})
        return {"max_seq_len": 1, "k": k, "dispatches": [
            {"kernel": partial, "label": "topk (groups)",
             "bindings": self.binds("topk_partial", x="logits", inv_t="inv_temperature", part="topk_part"),
             "uniforms": [str(vocab)], "workgroups": [str(groups), "1", "1"]},
            {"kernel": merge, "label": "topk (merge)",
             "bindings": self.binds("topk_merge", part="topk_part", inv_t="inv_temperature", out="topk"),
             "uniforms": [str(groups)], "workgroups": ["1", "1", "1"]}]}

    # -- limits -------------------------------------------------------------------------

    def _limits(self, plan: dict, kernels: list[KernelSpec]):
        for name, buf in self.buffers.items():
            size = buffer_size(buf, "f32")
            if size > self.max_buffer or size > self.max_binding:
                what = ("lower --context-window" if buf["kind"] == "kv_cache" else
                        "lower the verify chunk" if name in self.rows_names.values() else "lower the prefill chunk")
                raise PackError(f"buffer {name} needs {size} bytes, over the device limit "
                                f"(binding {self.max_binding}, buffer {self.max_buffer}); {what}")
        max_wg = 1
        envs = {"prefill": [(1, 0), (self.chunk, 0), (self.chunk, self.ctx - self.chunk)],
                "decode": [(1, 0), (1, self.ctx - 1)], "argmax": [(1, 0)], "topk": [(1, 0)],
                "verify": [(1, 0), (self.verify_chunk, 0), (self.verify_chunk, self.ctx - self.verify_chunk)],
                "verify_argmax": [(1, 0), (self.verify_chunk, 0)]}
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
        sizes = [TEMPLATES[k.template].workgroup_size for k in kernels]
        kernel_limits = {
            "maxComputeWorkgroupStorageSize": max(k.workgroup_bytes() for k in kernels),
            "maxComputeInvocationsPerWorkgroup": max(math.prod(s) for s in sizes),
            "maxComputeWorkgroupSizeX": max(s[0] for s in sizes),
            "maxComputeWorkgroupSizeY": max(s[1] for s in sizes),
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


# ---------------------------------------------------------------------------------------
# fused lowerings (FUSIONS; docs/plan.md, "Fused dispatches")


def fuse_glu(b: _Builder, out: list, ops: list, i: int, mode: str) -> int:
    """Decode: `linear(x -> g, Wg)`, `linear(x -> u, Wu)`, `<act>_mul(g, u) -> g` (act in
    GLU_ACTS) as one matvec_glu dispatch per row block, writing g. Only where both weights
    have the same format, shape and row blocks (Phi-3's gate_up_proj row views included) and
    the kernel's storage buffers (x, y, both weights' parts) fit WebGPU's default 8 (q3f16's
    four parts do not)."""
    if mode != "decode" or i + 3 > len(ops):
        return 0
    (gate, layer), (up, _), (mul, _) = ops[i:i + 3]
    if (gate.kind, up.kind) != ("linear", "linear") or mul.kind not in {f"{a}_mul" for a in GLU_ACTS}:
        return 0
    if tuple(mul.inputs) != (gate.out, up.out) or mul.out != gate.out or gate.inputs != up.inputs \
            or gate.out == up.out or gate.out in gate.inputs or not b.per_token(gate.inputs[0]):
        return 0
    tg, tu = b.tensors[gate.weight], b.tensors[up.weight]
    fmt, K = tg["format"], int(tg["shape"][1])
    N = int(tg["shape"][0]) if gate.rows is None else gate.rows[1] - gate.rows[0]
    if (tu["format"], int(tu["shape"][1])) != (fmt, K) or b.buffers[gate.out]["dtype"] != "act" \
            or b.width(gate.out) != N or b.width(up.out) != N \
            or sum(t != "uniform" for _, t in kernel_bindings("matvec_glu", fmt)) > MAX_STORAGE_BUFFERS:
        return 0
    blocks_g, blocks_u = b.weight_blocks(gate.weight, gate.rows), b.weight_blocks(up.weight, up.rows)
    if [(x["row0"], x["rows"]) for x in blocks_g] != [(x["row0"], x["rows"]) for x in blocks_u]:
        return 0
    act = mul.kind[:-len("_mul")]
    kname = b.kernel(f"matvec_glu.{act}.{fmt}.k{K}.n{N}", "matvec_glu", {"K": K, "N": N, "ACT": GLU_ACTS.index(act)},
                     fmt)
    label = ("" if layer is None else f"layer {layer} ") + f"{gate.label} + {up.label} + {mul.label}"
    for bg, bu in zip(blocks_g, blocks_u):
        out.append({"kernel": kname, "label": b.block_label(label, blocks_g, bg),
                    "bindings": b.binds("matvec_glu", bg["parts"] + bu["parts"], x=gate.inputs[0], y=gate.out),
                    "uniforms": ["seq_len", str(bg["row0"]), str(bg["rows"])],
                    "workgroups": [str(cdiv(bg["rows"], tile("matvec_glu", "ROWS"))), "seq_len", "1"]})
    return 3



def fuse_add_rmsnorm(b: _Builder, out: list, ops: list, i: int, mode: str) -> int:
    """A residual add `a += y` and the RMSNorm of `a` right after it (in the same layer, the
    next layer's input norm, or the final norm) as one `add_rmsnorm` dispatch, when the norm
    covers the rows the add does: every token's, or the one token of a decode call (a
    prefill's final norm of the last token only stays unfused). `add_rmsnorm_inplace` when the
    norm writes y itself (Gemma: `x += xn`, then `xn = norm(x)`)."""
    if i + 1 >= len(ops):
        return 0
    (add, add_layer), (norm, norm_layer) = ops[i], ops[i + 1]
    if add.kind != "add" or norm.kind != "rmsnorm" or add.out != add.inputs[0] or norm.inputs[0] != add.out:
        return 0
    a, y = add.inputs
    H = int(b.tensors[norm.weight]["shape"][0])
    if b.buffers[a]["dtype"] != "f32" or b.width(a) != H or b.width(norm.out) != H or norm.out == a:
        return 0
    last_only = not b.per_token(norm.out)
    if last_only and mode != "decode":
        return 0
    y_type = b.buffers[y]["dtype"]
    template = "add_rmsnorm_inplace" if norm.out == y else "add_rmsnorm"
    kname = b.kernel(f"{template}.h{H}" + (".f32y" if y_type == "f32" else ""), template,
                     {"H": H, "EPS": float(b.c.rms_norm_eps), "Y": y_type})
    (w,) = b.weight_blocks(norm.weight)
    prefix = "" if add_layer is None else f"layer {add_layer} "
    norm_prefix = "" if norm_layer == add_layer or norm_layer is None else f"layer {norm_layer} "
    binds = {"x": a, "y": y, "w": w["parts"][0]} | ({} if norm.out == y else {"out": norm.out})
    # a decode call is one token: the add's rows are the (last-token) norm's
    out.append({"kernel": kname, "label": f"{prefix}{add.label} + {norm_prefix}{norm.label}",
                "bindings": b.binds(template, **binds), "uniforms": ["0"],
                "workgroups": ["1" if last_only else "seq_len", "1", "1"]})
    return 2




def fuse_qkv_rope(b: _Builder, out: list, ops: list, i: int, mode: str) -> int:
    """Decode: a layer's q, k, v projections, each a linear op or a linear op and its bias
    (`bias_add`: Qwen2), that go straight into RoPE (or none: a NoPE layer) and attention, with
    nothing between (docs/plan.md, "Fused dispatches"). q is a `matvec_rope`, k a `matvec_rope`
    into its cache row, v a `matvec` into its cache row (its row0 uniform is the output offset),
    each the `_bias` template with the bias bound where there is one; then the attention without
    `kv_append`: 3 dispatches before the attention's instead of 5 (NoPE: 3 instead of 4; Qwen2: 3
    instead of 8). Not for weights split into row blocks."""
    if mode != "decode":
        return 0
    projections, j = [], i  # (linear op, its bias_add op or None) for q, k, v
    while len(projections) < 3 and j < len(ops) and ops[j][0].kind == "linear":
        bias = ops[j + 1][0] if j + 1 < len(ops) and ops[j + 1][0].kind == "bias_add" else None
        projections.append((ops[j][0], bias))
        j += 1 + (bias is not None)
    if len(projections) < 3:
        return 0
    (q, q_bias), (k, k_bias), (v, v_bias) = projections
    layer = ops[i][1]
    rope = ops[j][0] if j < len(ops) and ops[j][0].kind == "rope" else None
    n = j - i + (rope is not None) + 1
    att = ops[i + n - 1][0] if i + n <= len(ops) else None
    if att is None or att.kind != "attention" or att.inputs != (q.out, k.out, v.out) \
            or {lay for _, lay in ops[i:i + n]} != {layer} or (rope and rope.inputs != (q.out, k.out)):
        return 0
    for op, bias in projections:
        blocks = b.weight_blocks(op.weight, op.rows)
        if len(blocks) != 1 or blocks[0]["rows"] != b.width(op.out) or not b.per_token(op.inputs[0]) \
                or b.buffers[op.out]["dtype"] != "act" or (bias and not _is_bias_of(b, bias, op)):
            return 0
    dst = b.cache_dst(att)
    if rope is None:
        b.lower(out, q, mode, layer)
        if q_bias:
            b.lower(out, q_bias, mode, layer)
        _matvec_into(b, out, k, "k_cache", layer, dst, k_bias)
    else:
        _matvec_rope_into(b, out, q, rope, None, layer, "0", q_bias)
        _matvec_rope_into(b, out, k, rope, "k_cache", layer, dst, k_bias)
    _matvec_into(b, out, v, "v_cache", layer, dst, v_bias)
    b._attend(out, att, f"layer {layer} ", mode, layer)
    return n


def _is_bias_of(b: _Builder, bias: Op, op: Op) -> bool:
    """`bias` adds an unsplit f32 vector of op's output width to op's output, in place."""
    t = b.tensors[bias.weight]
    return bias.inputs == (op.out,) and bias.out == op.out and t["format"] == "f32" \
        and tuple(t["shape"]) == (b.width(op.out),) and len(b.weight_blocks(bias.weight)) == 1


def _matvec_into(b: _Builder, out: list, op: Op, cache: str, layer: int, at: str, bias: Op | None = None):
    """The decode matvec of a linear op (one unsplit weight block) writing the layer's `cache`
    (k_cache / v_cache) from element `at` on instead of its output; with `bias` (its bias_add
    op), `matvec_bias` adding the bias."""
    t = b.tensors[op.weight]
    (blk,) = b.weight_blocks(op.weight, op.rows)
    K, N = int(t["shape"][1]), blk["rows"]
    template = "matvec_bias" if bias else "matvec"
    kname = b.kernel(f"{template}.{t['format']}.k{K}.n{N}", template, {"K": K, "N": N, "OUT": "act"}, t["format"])
    label = f"layer {layer} {op.label}" + (f" + {bias.label}" if bias else "") + f" -> {cache}"
    extra = {"bias": b.weight_blocks(bias.weight)[0]["parts"][0]} if bias else {}
    out.append({"kernel": kname, "label": label,
                "bindings": b.binds(template, blk["parts"], x=op.inputs[0], y=f"{cache}.{layer}", **extra),
                "uniforms": ["1", at, str(N)], "workgroups": [str(cdiv(N, tile(template, "ROWS"))), "1", "1"]})


def _matvec_rope_into(b: _Builder, out: list, op: Op, rope: Op, cache: str | None, layer: int, at: str,
                      bias: Op | None = None):
    """The decode matvec of a linear op (q or k; one unsplit weight block) with the rope op's
    rotation fused, writing its output, or the layer's `cache` from element `at` on; with `bias`
    (its bias_add op), `matvec_rope_bias` adding the bias before the rotation."""
    t = b.tensors[op.weight]
    (blk,) = b.weight_blocks(op.weight, op.rows)
    K, N, HD = int(t["shape"][1]), blk["rows"], b.c.head_dim
    consts, suffix = b.rope_consts(rope)
    template = "matvec_rope_bias" if bias else "matvec_rope"
    kname = b.kernel(f"{template}.{t['format']}.k{K}.n{N}.d{HD}{suffix}", template,
                     {"K": K, "N": N, "HD": HD, **consts}, t["format"])
    label, y = f"layer {layer} {op.label}" + (f" + {bias.label}" if bias else "") + f" + {rope.label}", op.out
    if cache:
        label, y = f"{label} -> {cache}", f"{cache}.{layer}"
    extra = {"bias": b.weight_blocks(bias.weight)[0]["parts"][0]} if bias else {}
    out.append({"kernel": kname, "label": label,
                "bindings": b.binds(template, blk["parts"], x=op.inputs[0], y=y, **extra),
                "uniforms": ["past_len", at], "workgroups": [str(cdiv(N, tile(template, "ROWS"))), "1", "1"]})


# the fused lowerings tried at each op, in order (see _Builder.__init__; docs/plan.md, "Fused dispatches")
FUSIONS = [fuse_glu, fuse_add_rmsnorm, fuse_qkv_rope]


def build_plan(manifest: dict, *, config: ModelConfig | None = None, context_window: int | None = None,
               max_binding_size: int = DEFAULT_MAX_BINDING, max_buffer_size: int = DEFAULT_MAX_BUFFER,
               prefill_chunk: int = DEFAULT_PREFILL_CHUNK, fuse: bool = True,
               verify_chunk: int | None = None) -> tuple[dict, list[KernelSpec]]:
    """(plan JSON dict, kernel specs) of a bundle manifest (a dict: its tensor index and
    quantization). config: the resolved config (packaging passes the one it resolved);
    without it, the config is read from the manifest, the context window being
    `context_window` if given, else the manifest's, else the default. fuse=False: every op
    lowered on its own (no fused dispatches; for measuring what fusion saves). verify_chunk: most
    tokens of the "verify" entry (None: min(16, prefill chunk); 0: no verify entry). Raises PackError."""
    if config is None:
        config = config_from_manifest(manifest, context_window)
    elif context_window is not None:
        raise ValueError("give the context window in the config or as context_window, not both")
    return _Builder(manifest, config, max_binding_size, max_buffer_size, prefill_chunk, fuse, verify_chunk).build()
