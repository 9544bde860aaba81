"""Constrained decoding and tool calls on real bundles, through the JS engine on the Wasm
backend in Node (runtime_js/test/e2e/structured_job.mjs), checked here with the
`jsonschema` validator (the JS unit tests use ajv: two validators, one contract).

- a tiny random-weight Llama (its byte-level BPE tokenizer, 320 tokens): whatever a random
  model prefers, a bounded json_schema answer ends within max_tokens and validates; a cut
  answer ends with finish_reason "length"; a GBNF grammar's answer is in its language.
- SmolLM2-135M-Instruct (49k vocabulary, its real tokenizer and chat template, which does
  not render tools: the system-message fallback): a json_schema answer validates; a tool
  call round trip with tool_choice "required" and a named function, the tool's result
  going back in as a role "tool" message.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import require_node

jsonschema = pytest.importorskip("jsonschema")

RUNTIME = Path(__file__).resolve().parent.parent / "runtime_js"
DRIVER = RUNTIME / "test" / "e2e" / "structured_job.mjs"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "member": {"type": "boolean"},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 2},
    },
    "required": ["name", "age", "member", "pets"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a time zone",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 32}},
                       "required": ["zone"], "additionalProperties": False},
    },
}


def run_driver(bundle, requests, tmp_path) -> list[dict]:
    require_node()
    node = shutil.which("node")
    subprocess.run([node, "build.mjs"], cwd=RUNTIME, check=True, capture_output=True, timeout=300)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"requests": requests}))
    r = subprocess.run([node, str(DRIVER), "--bundle", str(bundle), "--spec", str(spec)], cwd=RUNTIME,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["backend"] == "wasm"
    return out["responses"]


def person_request(**kw) -> dict:
    schema = {"name": "person", "schema": PERSON, "strict": True}
    return {"messages": [{"role": "user", "content": "Describe a person."}],
            "response_format": {"type": "json_schema", "json_schema": schema}, **kw}


def test_tiny_random_model_json_schema_and_grammar(packaged_tiny, tmp_path):
    bundle = packaged_tiny("gqa", "q4f32")
    grammar = 'root ::= "Answer: " ("yes" | "no") ", " [0-9] [0-9]? "%"'
    requests = [{"request": person_request(temperature=1.0, seed=seed, max_tokens=120)} for seed in (1, 2, 3)]
    requests.append({"request": person_request(temperature=1.0, seed=1, max_tokens=4)})
    requests.append({"request": {"messages": [{"role": "user", "content": "?"}], "temperature": 1.0, "seed": 5,
                                 "response_format": {"type": "grammar", "grammar": grammar}, "max_tokens": 40}})
    out = run_driver(bundle, requests, tmp_path)
    for r in out[:3]:  # a bounded schema: every answer ends within max_tokens, and validates
        choice = r["response"]["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        jsonschema.validate(json.loads(choice["message"]["content"]), PERSON)
    cut = out[3]["response"]
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut["choices"][0]["message"]["content"])
    assert re.fullmatch(r"Answer: (yes|no), [0-9][0-9]?%", out[4]["response"]["choices"][0]["message"]["content"])


@pytest.mark.slow
def test_smollm2_json_schema_and_tool_round_trip(smollm2_bundle, tmp_path):
    bundle = smollm2_bundle("q4f32")
    ask = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    requests = [
        {"request": person_request(temperature=0, max_tokens=80)},
        {"request": {"messages": ask, "tools": [WEATHER, TIME], "tool_choice": "required", "temperature": 0,
                     "max_tokens": 60, "parallel_tool_calls": False},
         "then": {"tool_result": '{"temperature": 18, "unit": "celsius", "sky": "sunny"}'}},
        {"request": {"messages": ask, "tools": [WEATHER, TIME], "temperature": 0, "max_tokens": 60,
                     "tool_choice": {"type": "function", "function": {"name": "get_time"}}}},
        {"request": {"messages": ask, "max_tokens": 1}},  # the question alone: its prompt's length
    ]
    out = run_driver(bundle, requests, tmp_path)
    person = out[0]["response"]["choices"][0]
    assert person["finish_reason"] == "stop", person
    jsonschema.validate(json.loads(person["message"]["content"]), PERSON)

    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    required = out[1]["response"]
    choice = required["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])
    # the call and the tool's result went back in (tool_choice "none": without the tools' system
    # message): the follow-up prompt is the question's, the call and more; it answers in text
    followup = out[1]["followup"]
    question = out[3]["response"]["usage"]["prompt_tokens"]
    assert followup["usage"]["prompt_tokens"] > question + required["usage"]["completion_tokens"]
    assert followup["choices"][0]["finish_reason"] in ("stop", "length")
    assert followup["choices"][0]["message"]["content"]
    assert not followup["choices"][0]["message"].get("tool_calls")

    named = out[2]["response"]["choices"][0]
    assert named["finish_reason"] == "tool_calls", named
    (call,) = named["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time"
    jsonschema.validate(json.loads(call["function"]["arguments"]), schemas["get_time"])
