"""What an architecture definition is made of: the resolved config, the tensor table and
the graph (ops in the plan's vocabulary). The plan builder (packager/plan.py), the numpy
reference (packager/reference.py) and the calibrator (packager/calibrate.py) read these;
nothing else knows an architecture.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Callable, Mapping

from ..errors import PackError
from ..rope import Rope

CONTEXT_CAP = 4096  # the default context window is min(max_position_embeddings, CONTEXT_CAP)
MIN_CONTEXT = 16


def resolve_context_window(max_position_embeddings: int, requested: int | None) -> int:
    """The KV-cache capacity of a bundle: the one default, bound and message."""
    if max_position_embeddings < MIN_CONTEXT:  # the config's fault, whatever --context-window says
        raise PackError(f"the model's max_position_embeddings is {max_position_embeddings}; a model needs at "
                        f"least {MIN_CONTEXT} positions: fix config.json")
    if requested is None:
        return min(max_position_embeddings, CONTEXT_CAP)
    if isinstance(requested, bool) or not isinstance(requested, int) or \
            not MIN_CONTEXT <= requested <= max_position_embeddings:
        raise PackError(f"--context-window {requested} must be between {MIN_CONTEXT} and the model's "
                        f"max_position_embeddings ({max_position_embeddings})")
    return requested


@dataclass(frozen=True)
class ModelConfig:
    """A model's configuration, resolved once: from a checkpoint's config.json (a GGUF
    file's metadata is turned into one by its reader) with packager.models.resolve_config,
    or read back from a bundle's manifest with packager.models.config_from_manifest."""

    architecture: str  # the definition in packager.models, e.g. "llama"
    hf_architecture: str  # e.g. "LlamaForCausalLM"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope: Rope
    context_window: int  # KV-cache capacity of the bundle (resolve_context_window)

    # -- optional, with defaults that mean Llama (older manifests lack them) --------------
    # Phi-3 (packager/models/phi3.py) and SmolLM3 (smollm3.py):
    nope_layers: tuple[int, ...] = ()  # the layers that apply no RoPE (SmolLM3's NoPE layers)
    # sliding-window attention (Mistral, Gemma, Phi-3): keys per query in the layers that
    # layer_types marks "sliding_attention" (docs/plan.md, "Sliding-window layers")
    sliding_window: int = 0  # 0: none
    layer_types: tuple[str, ...] = ()  # per layer "sliding_attention" | "full_attention"; (): all full
    # Gemma 2 / 3 (packager/models/gemma.py):
    embed_scale: float = 1.0  # the token embeddings are multiplied by it (Gemma: sqrt(hidden_size) in f32)
    attention_scale: float | None = None  # of q.k; None: head_dim ** -0.5 (Gemma: query_pre_attn_scalar ** -0.5)
    attn_logit_softcap: float = 0.0  # attention scores -> tanh(s / cap) * cap; 0: none
    final_logit_softcap: float = 0.0  # logits -> tanh(l / cap) * cap; 0: none
    rope_local: Rope | None = None  # the sliding layers' RoPE where it is not `rope` (Gemma 3)

    NOT_IN_MANIFEST = ("architecture", "hf_architecture", "context_window")  # stored elsewhere in the manifest

    def __post_init__(self):
        """What no bundle of this config can run exactly, refused for every way a config is
        made (resolve_config, config_from_manifest)."""
        self.rope.check_context(self.context_window)

    def is_sliding(self, layer: int) -> bool:
        """Whether a decoder layer uses sliding-window attention (of `sliding_window` keys)."""
        return bool(self.sliding_window) and layer < len(self.layer_types) and \
            self.layer_types[layer] == "sliding_attention"

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def qkv_size(self) -> int:  # rows of a fused q/k/v projection (Phi-3)
        return self.q_size + 2 * self.kv_size

    @property
    def gate_up_size(self) -> int:  # rows of a fused gate/up projection (Phi-3)
        return 2 * self.intermediate_size

    def to_json(self) -> dict:
        """The manifest's model.config (the optional fields where they differ from their default)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in self.NOT_IN_MANIFEST and (f.default is MISSING or getattr(self, f.name) != f.default)}
        out["rope"] = self.rope.to_json()
        for k in ("nope_layers", "layer_types"):
            if k in out:
                out[k] = list(out[k])
        if "rope_local" in out:
            out["rope_local"] = self.rope_local.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping, *, architecture: str, hf_architecture: str, context_window: int) -> ModelConfig:
        names = {f.name for f in fields(cls)} - set(cls.NOT_IN_MANIFEST)
        required = {f.name for f in fields(cls) if f.default is MISSING} - set(cls.NOT_IN_MANIFEST)
        missing = sorted(required - set(data))
        if missing:
            raise PackError(f"the manifest's model config lacks {', '.join(missing)}; package the bundle again")
        values = {k: data[k] for k in names if k in data}
        values["rope"] = Rope.from_json(data["rope"])
        if "nope_layers" in values:
            values["nope_layers"] = tuple(int(i) for i in values["nope_layers"])
        if values.get("rope_local") is not None:
            values["rope_local"] = Rope.from_json(values["rope_local"])
        if "layer_types" in values:
            values["layer_types"] = tuple(values["layer_types"])
        return cls(architecture=architecture, hf_architecture=hf_architecture, context_window=context_window,
                   **values)


# ---------------------------------------------------------------------------------------
# the tensor table

LAYER_PREFIX = "model.layers.{}."  # Hugging Face's names of a decoder layer's tensors (llama.cpp's: blk.{}.)


@dataclass(frozen=True)
class TensorRow:
    """A row of an architecture's tensor table. In a decoder layer, `name` and `gguf` are
    relative to the layer (model.layers.<i>. and blk.<i>.)."""

    name: str
    shape: tuple[str, ...]  # ModelConfig attributes
    role: str  # for the quantization policy: vector, matrix, sensitive, embedding or head (quantization/policy.py)
    gguf: str = ""  # llama.cpp's name of the tensor
    gguf_rope_heads: str = ""  # llama.cpp permuted these rows for its RoPE; the ModelConfig field of their head count
    hf_offset: float = 0.0  # added to a Hugging Face checkpoint's values when packaged (Gemma's norms: 1 + w)

    def spec(self, c: ModelConfig, prefix: str = "", role: str | None = None) -> TensorSpec:
        return TensorSpec(prefix + self.name, tuple(int(getattr(c, d)) for d in self.shape), role or self.role,
                          self.hf_offset)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    role: str
    hf_offset: float = 0.0  # TensorRow.hf_offset


# ---------------------------------------------------------------------------------------
# the graph

OP_KINDS = ("embedding", "rmsnorm", "linear", "bias_add", "rope", "attention", "add", "silu_mul", "gelu_tanh_mul",
            "softcap")


@dataclass(frozen=True)
class Op:
    """One op of the graph, in the plan's op vocabulary (docs/plan.md, "Graph"):

    embedding (tokens) -> out      rows of `weight` for the token ids
    rmsnorm (x) -> out             x / sqrt(mean(x^2) + rms_norm_eps) * weight, over each run of
                                   len(weight) values: a token's row, or each head of it (q/k norms)
    linear (x) -> out              x @ weight.T (or x @ weight[a:b].T: `rows`, a view of a fused matrix)
    bias_add (x) -> x              x + weight (a linear layer's bias, in place: out is x)
    rope (q, k)                    rotary embedding of both, in place
    attention (q, k, v) -> out     appends k, v to the layer's KV cache; causal grouped-query attention
    add (a, b) -> a                a + b (the plan's kernel works in place: out is a)
    silu_mul (g, u) -> g           silu(g) * u (in place too)
    gelu_tanh_mul (g, u) -> g      gelu_tanh(g) * u (in place; Gemma's MLP)
    softcap (x) -> x               tanh(x / cap) * cap (in place; Gemma 2's final logits)
    """

    kind: str
    inputs: tuple[str, ...]
    out: str = ""  # the activation written ("" for rope, which writes its inputs)
    weight: str = ""  # the tensor it reads
    label: str = ""
    rows: tuple[int, int] | None = None  # linear: only weight rows [a, b) (a view of a fused matrix: Phi-3)
    # per-op variants (docs/plan.md, "Architectures"):
    scale: float | None = None  # embedding: rows times it; attention: of q.k (None: 1, head_dim ** -0.5)
    cap: float = 0.0  # attention: soft-cap of the scores (0: none); softcap: the cap
    window: int = 0  # attention: keys per query of a sliding-window layer (0: the whole context)
    rope: Rope | None = None  # rope: this op's RoPE (None: the config's)


@dataclass(frozen=True)
class Activation:
    """An activation buffer: `width` values per token. `tokens` (the call's token ids) and
    `logits` ([vocab_size], f32) are the graph's input and output and not listed."""

    name: str
    width: int
    dtype: str = "act"  # "act" (f16 or f32 by kernel variant) or "f32"
    last_token: bool = False  # the plan computes it for the call's last token only


@dataclass(frozen=True)
class Graph:
    activations: tuple[Activation, ...]
    embed: tuple[Op, ...]  # tokens -> the residual stream
    layers: tuple[tuple[Op, ...], ...]  # the ops of each decoder layer (layers may differ)
    head: tuple[Op, ...]  # -> logits

    def activation(self, name: str) -> Activation:
        return next(a for a in self.activations if a.name == name)


@dataclass(frozen=True)
class Architecture:
    """An architecture definition (one module of packager.models)."""

    name: str
    hf_architectures: tuple[str, ...]
    model_types: Mapping[str, str]  # config.json model_type -> HF architecture (configs without "architectures")
    gguf_architectures: Mapping[str, str]  # GGUF general.architecture -> HF architecture
    resolve: Callable[[dict], dict]  # raw config.json -> the ModelConfig fields; raises PackError
    global_rows: tuple[TensorRow, ...]  # the tensors outside the decoder layers
    layer_rows: tuple[TensorRow, ...]  # the tensors of a decoder layer
    tensors: Callable[[ModelConfig], list[TensorSpec]]  # the model's tensors (from the rows), in storage order
    graph: Callable[[ModelConfig], Graph]

    def from_gguf(self, name: str) -> tuple[str, TensorRow] | None:
        """llama.cpp's tensor name -> (Hugging Face name, its row); None for a tensor the
        definition does not use."""
        for r in self.global_rows:
            if r.gguf and r.gguf == name:
                return r.name, r
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit():
            for r in self.layer_rows:
                if r.gguf and r.gguf == parts[2]:
                    return LAYER_PREFIX.format(int(parts[1])) + r.name, r
        return None
