"""The real model: SmolLM2-135M-Instruct bundles greedy-decode what transformers does."""

import numpy as np
import pytest

from conftest import CHAT_PROMPTS, LONG_TESTS, chat_ids, hf_greedy
from packager.reference import ReferenceModel

pytestmark = pytest.mark.slow
NEW_TOKENS = 32 if LONG_TESTS else 16


def test_manifest_of_real_model(smollm2_bundle):
    from bundle_contract.manifest import load
    m = load(smollm2_bundle("q4f16")).data
    assert m["model"]["config"]["num_hidden_layers"] == 30 and m["model"]["license"] == "apache-2.0"
    assert m["model"]["parameters"] == 134515008
    assert "<|im_start|>" in m["tokenizer"]["chat_template"]
    formats = {t["name"]: t["format"] for t in m["tensors"]}
    assert formats["model.embed_tokens.weight"] == "q8f16"  # tied head: kept at 8 bits
    assert formats["model.layers.0.mlp.down_proj.weight"] == "q4f16"
    assert formats["model.norm.weight"] == "f32"
    # 4.5 bits for the layers, 8.5 for the tied table (21 % of the weights)
    assert 5.6 < m["quantization"]["bits_per_weight"] < 5.9


def test_f32_bundle_greedy_equals_transformers(smollm2_bundle, smollm2_hf):
    model, tok = smollm2_hf
    ref = ReferenceModel(smollm2_bundle("f32"))
    for messages in CHAT_PROMPTS:
        prompt = chat_ids(tok, messages)
        assert ref.greedy(prompt, NEW_TOKENS) == hf_greedy(model, prompt, NEW_TOKENS)


@pytest.mark.parametrize("quant", ["q4f16", pytest.param("q4f32", marks=pytest.mark.long)])
def test_q4_bundle_greedy_equals_transformers_on_dequantized_weights(quant, smollm2_bundle, smollm2_hf):
    import copy

    import torch
    model, tok = smollm2_hf
    ref = ReferenceModel(smollm2_bundle(quant))
    deq = copy.deepcopy(model)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ref.w.items()}
    missing, unexpected = deq.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    deq.tie_weights()
    outputs = []
    for messages in CHAT_PROMPTS:
        prompt = chat_ids(tok, messages)
        got = ref.greedy(prompt, NEW_TOKENS)
        assert got == hf_greedy(deq, prompt, NEW_TOKENS)
        outputs.append(tok.decode(got))
    assert any("Paris" in o for o in outputs), outputs  # still a working model after 4-bit
