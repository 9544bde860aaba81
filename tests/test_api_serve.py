"""`llmpack serve B --api`: the OpenAI-compatible endpoint, through the official `openai`
Python client against the real CLI on a real port. Answers are compared with the runtime
run directly (runtime_js/test/e2e/chat_direct.mjs: same bundle, same request, greedy or
the same seed), whose own answers other tests check against the numpy reference executor
and transformers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from checkpoints import build_tiny_checkpoint
from conftest import record_device, require_node

ROOT = Path(__file__).resolve().parent.parent
CHAT_DIRECT = ROOT / "runtime_js" / "test" / "e2e" / "chat_direct.mjs"
MODEL = "tiny-chat"
COPY = "tiny-copy"  # the same bundle in another folder: a second model, with an engine of its own
# greedy on the tiny model: "hi" ends (EOS) after a few hundred tokens, the story fills
# max_tokens (4000 tokens, seconds of decoding: long enough to be aborted midway)
HI = [{"role": "user", "content": "hi"}]
STORY = [{"role": "user", "content": "Tell me a story."}]
LONG = 4000


class Server:
    """`llmpack serve ... --api --port 0` as a subprocess; its output lines are kept."""

    def __init__(self, paths: list[Path], env: dict | None = None, args: tuple[str, ...] = ()):
        self.proc = subprocess.Popen([sys.executable, "-m", "packager.cli", "serve", *map(str, paths), "--api",
                                      "--port", "0", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.lines: list[str] = []
        first = self.proc.stdout.readline()
        self.lines.append(first)
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)", first)
        threading.Thread(target=self._read, daemon=True).start()
        if not match:
            self.stop()
            pytest.fail(f"no URL line from llmpack serve --api:\n{first}{self.output()}")
        self.url = match.group(1)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, since: int, timeout: float = 120) -> re.Match:
        """The first output line after `since` matching `pattern` (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[since:]:
                if m := re.search(pattern, line):
                    return m
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in the server's output:\n{self.output()[-3000:]}")

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "v1", api_key="unused", max_retries=0, **kw)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def direct(bundle: Path, requests: list[dict]) -> list[dict]:
    """The runtime's own answers to `requests` (chat_direct.mjs)."""
    r = subprocess.run(["node", str(CHAT_DIRECT), str(bundle)], input=json.dumps(requests), capture_output=True,
                       text=True, timeout=300, env={**os.environ})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A tiny random Llama with a 4096-token context window, in a folder of bundles."""
    from packager.bundle import package_model

    tmp = tmp_path_factory.mktemp("api")
    out = tmp / "bundles" / MODEL
    package_model(build_tiny_checkpoint(tmp / "ckpt", "gqa", max_position_embeddings=4096), out, quant="q4f16")
    shutil.copytree(out, out.parent / COPY)
    return out


@pytest.fixture(scope="module")
def server(bundle):
    require_node()
    s = Server([bundle.parent])
    yield s
    s.stop()


def test_models_list_and_retrieve(server):
    client = server.client()
    assert [(m.id, m.object, m.owned_by) for m in client.models.list()] == [(MODEL, "model", "llmpack"),
                                                                             (COPY, "model", "llmpack")]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("nope")
    assert e.value.body["code"] == "model_not_found"


def test_plain_and_streamed_answers_are_the_runtimes(server, bundle):
    requests = [dict(messages=HI, max_tokens=12, temperature=0),
                dict(messages=STORY, max_tokens=20, temperature=0.9, top_p=0.95, seed=1234)]
    want = direct(bundle, requests)
    client = server.client()
    for req, expected in zip(requests, want):
        res = client.chat.completions.create(model=MODEL, **req)
        assert res.object == "chat.completion" and res.model == MODEL
        assert res.choices[0].message.role == "assistant"
        assert res.choices[0].message.content == expected["choices"][0]["message"]["content"]
        assert res.choices[0].finish_reason == expected["choices"][0]["finish_reason"]
        assert res.usage.model_dump(exclude_none=True) == expected["usage"]

        chunks = list(client.chat.completions.create(model=MODEL, stream=True, **req))
        assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert text == expected["choices"][0]["message"]["content"]
        assert [c.choices[0].finish_reason for c in chunks][-1] == expected["choices"][0]["finish_reason"]
        assert chunks[-1].usage.completion_tokens == expected["usage"]["completion_tokens"]


def test_the_official_javascript_client_too(server, bundle):
    """The `openai` npm package (runtime_js devDependency) through the same endpoint."""
    req = dict(messages=HI, max_tokens=10, temperature=0)
    want = direct(bundle, [req, {**req, "temperature": -1}])
    r = subprocess.run(["node", str(ROOT / "runtime_js" / "test" / "e2e" / "openai_js_client.mjs"), server.url + "v1",
                        MODEL], input=json.dumps(req), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    assert got["models"] == [MODEL, COPY]
    assert got["answer"] == got["streamed"] == want[0]["choices"][0]["message"]["content"]
    assert got["error"] == {"name": "BadRequestError", "status": 400, "message": want[1]["error"],
                            "param": "temperature"}


def test_server_sent_events_are_openais_framing(server):
    """Raw bytes: `data: <json>` events separated by a blank line, then `data: [DONE]`."""
    body = {"model": MODEL, "messages": HI, "max_tokens": 3, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") and "\n" not in e for e in events[:-2])
    assert json.loads(events[-3][6:])["choices"][0]["finish_reason"] == "length"


def test_bad_requests_are_400_with_the_runtimes_message(server, bundle):
    client = server.client()
    bad = [dict(messages=HI, temperature=-1), dict(messages=[]), dict(messages=HI, top_p=7),
           dict(messages=HI, max_tokens=-3)]
    want = direct(bundle, bad)
    for req, expected in zip(bad, want):
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as e:
                client.chat.completions.create(model=MODEL, stream=stream, **req)
            assert e.value.status_code == 400
            assert e.value.body["message"] == expected["error"] and e.value.body["type"] == "invalid_request_error"
            assert e.value.body["param"] == re.match(r"\w+", expected["error"]).group(0)
    with pytest.raises(openai.BadRequestError, match="provide a model"):
        client.chat.completions.create(model="", messages=HI)
    r = httpx.post(server.url + "v1/chat/completions", content=b"{not json", timeout=30,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    # a form post (what a page of another site may send without a CORS preflight) runs nothing
    body = json.dumps({"model": MODEL, "messages": HI, "max_tokens": 1})
    r = httpx.post(server.url + "v1/chat/completions", content=body, timeout=30, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]["message"]
    r = httpx.get(server.url + "v1/chat/completions", timeout=30)
    assert r.status_code == 405 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_unknown_model_is_404(server):
    with pytest.raises(openai.NotFoundError) as e:
        server.client().chat.completions.create(model="gpt-4o", messages=HI)
    assert e.value.body["code"] == "model_not_found" and MODEL in e.value.body["message"]
    r = httpx.get(server.url + "v1/completions", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"


def test_the_host_check_covers_the_api(server):
    """A DNS-rebinding page sends its own name as the Host: refused, as every other path."""
    r = httpx.get(server.url + "v1/models", headers={"Host": "evil.example"}, timeout=30)
    assert r.status_code == 421 and MODEL.encode() not in r.content


def test_concurrent_requests_are_queued_and_all_answered(server, bundle):
    requests = [dict(messages=HI, max_tokens=40, temperature=0), dict(messages=STORY, max_tokens=40, temperature=0),
                dict(messages=[{"role": "user", "content": "Why is the sky blue?"}], max_tokens=40, temperature=0)]
    want = [w["choices"][0]["message"]["content"] for w in direct(bundle, requests)]
    client = server.client()

    def ask(job: tuple[str, int]) -> str:
        model, i = job
        if i == 1:  # one streamed among them
            return "".join(c.choices[0].delta.content or ""
                           for c in client.chat.completions.create(model=model, stream=True, **requests[i]))
        return client.chat.completions.create(model=model, **requests[i]).choices[0].message.content

    jobs = [(MODEL, 0), (MODEL, 1), (MODEL, 2), (COPY, 2), (COPY, 0)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(ask, jobs))
    # one model's requests ran one at a time (no answer used another's KV cache); the two
    # models side by side, each on its own engine
    assert got == [want[i] for _, i in jobs]
    for model in (MODEL, COPY):
        m = server.wait_for_line(rf"llmpack api: {model} runs on (.+?) \(", 0)
        record_device("llmpack serve --api", m.group(1))


def test_a_client_going_away_aborts_generation(server, bundle):
    client = server.client()
    mark = len(server.lines)
    stream = client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=LONG, temperature=0, stream=True)
    chunks = iter(stream)
    for _ in range(3):
        next(chunks)
    stream.close()
    # (the engine threw its AbortError at the chunk after the abort: one per token at most)
    m = server.wait_for_line(rf"request \d+ \({MODEL}\) aborted after (\d+) chunks", mark)
    assert int(m.group(1)) < LONG

    mark = len(server.lines)  # a request whose client stops waiting (a timeout) is aborted too
    with pytest.raises(openai.APITimeoutError):
        server.client(timeout=1.0).chat.completions.create(model=MODEL, messages=STORY, max_tokens=LONG,
                                                           temperature=0)
    server.wait_for_line(rf"request \d+ \({MODEL}\) aborted: the client went away", mark)

    want = direct(bundle, [dict(messages=HI, max_tokens=16, temperature=0)])[0]
    res = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=16, temperature=0)
    assert res.choices[0].message.content == want["choices"][0]["message"]["content"]


# ------------------------------------------------- the runtime's chat parameters, through the API

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "pets"],
          "properties": {"name": {"type": "string", "maxLength": 10},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 2}}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["C", "F"]}}}}}


def test_json_schema_answers_validate(server, bundle):
    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    messages = [{"role": "user", "content": "Describe a person as JSON"}]
    reqs = [dict(messages=messages, response_format=fmt, max_tokens=200, temperature=t, seed=s)
            for t, s in ((0, None), (1, 5), (1, 6))]
    want = direct(bundle, reqs)
    client = server.client()
    for req, expected in zip(reqs, want):
        res = client.chat.completions.create(model=MODEL, **req)
        assert res.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(res.choices[0].message.content), PERSON)
        assert res.choices[0].message.content == expected["choices"][0]["message"]["content"]
        streamed = "".join(c.choices[0].delta.content or ""
                           for c in client.chat.completions.create(model=MODEL, stream=True, **req))
        assert streamed == res.choices[0].message.content
    with pytest.raises(openai.BadRequestError):  # a schema that is not one
        client.chat.completions.create(model=MODEL, messages=messages, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}})


def test_a_tool_call_round_trip(server, bundle):
    """A named tool_choice makes the model call it (arguments valid for its parameters);
    the call and its result go back in as the next turn's assistant and tool messages."""
    import jsonschema

    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    choice = {"type": "function", "function": {"name": "get_weather"}}
    client = server.client()
    res = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], tool_choice=choice,
                                         max_tokens=100, temperature=0)
    assert res.choices[0].finish_reason == "tool_calls"
    (call,) = res.choices[0].message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    streamed = list(client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER],
                                                   tool_choice=choice, max_tokens=100, temperature=0, stream=True))
    deltas = [tc for c in streamed for tc in c.choices[0].delta.tool_calls or []]
    assert [d.function.name for d in deltas if d.function.name] == ["get_weather"]
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments
    assert streamed[-1].choices[0].finish_reason == "tool_calls"

    turn = [*messages, res.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "unit": "C"})}]
    req = dict(messages=turn, tools=[WEATHER], max_tokens=12, temperature=0)
    want = direct(bundle, [req])[0]
    answer = client.chat.completions.create(model=MODEL, **req)
    assert answer.choices[0].message.content == want["choices"][0]["message"]["content"]
    assert answer.usage.prompt_tokens == want["usage"]["prompt_tokens"] > res.usage.prompt_tokens


def test_logprobs_logit_bias_and_n(server, bundle):
    reqs = [dict(messages=HI, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3),
            dict(messages=HI, max_tokens=6, temperature=0, logprobs=True, logit_bias={"65": 100}),
            dict(messages=STORY, max_tokens=8, temperature=1, seed=11, n=2)]
    want = direct(bundle, reqs)
    client = server.client()
    got = [client.chat.completions.create(model=MODEL, **r) for r in reqs]

    entries = got[0].choices[0].logprobs.content
    expected = want[0]["choices"][0]["logprobs"]["content"]
    # the same tokens; the values to float32 rounding (the server's engine reused its KV cache's
    # prefix, so its prefill ran in other pieces than a fresh engine's)
    tokens = lambda e: (e["token"], e["bytes"], [(t["token"], t["bytes"]) for t in e["top_logprobs"]])  # noqa: E731
    assert [tokens(e.model_dump()) for e in entries] == [tokens(e) for e in expected]
    values = [[e.logprob, *(t.logprob for t in e.top_logprobs)] for e in entries]
    assert values == [pytest.approx([e["logprob"], *(t["logprob"] for t in e["top_logprobs"])], abs=1e-4)
                      for e in expected]
    assert len(entries) == got[0].usage.completion_tokens and all(len(e.top_logprobs) == 3 for e in entries)
    assert all(e.top_logprobs[0].logprob == e.logprob for e in entries)  # greedy: the best one was taken

    biased = got[1].choices[0].logprobs.content
    assert len({e.token for e in biased}) == 1 and len(biased) == 6  # +100: that token, every time
    assert got[1].choices[0].message.content == want[1]["choices"][0]["message"]["content"]

    assert [c.index for c in got[2].choices] == [0, 1]
    assert [c.message.content for c in got[2].choices] == [c["message"]["content"] for c in want[2]["choices"]]
    texts = {}
    for chunk in client.chat.completions.create(model=MODEL, stream=True, **reqs[2]):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
    assert texts == {0: got[2].choices[0].message.content, 1: got[2].choices[1].message.content}


def test_the_speculative_extension_field(server, bundle):
    """`"speculative": true` (llmpack's extension): prompt-lookup speculative decoding for
    this request; the runtime's plain answer, streamed and not, with the drafts counted in
    `timings`. An answer held to four tokens (logit_bias) loops, and prompt lookup drafts
    from the loop. A value other than true, false or null is a 400 naming the field."""
    req = dict(messages=HI, max_tokens=40, temperature=0, logit_bias={str(t): 100 for t in (65, 66, 67, 68)})
    want = direct(bundle, [req])[0]["choices"][0]["message"]["content"]
    client = server.client()
    res = client.chat.completions.create(model=MODEL, extra_body={"speculative": True}, **req)
    assert res.choices[0].message.content == want
    t = res.timings
    assert t["verify_steps"] > 0 and t["draft_tokens"] >= t["accepted_tokens"] > 0, t
    chunks = list(client.chat.completions.create(model=MODEL, stream=True, extra_body={"speculative": True}, **req))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].timings["accepted_tokens"] > 0, chunks[-1].timings
    off = client.chat.completions.create(model=MODEL, extra_body={"speculative": None}, **req)  # the server's default
    assert off.choices[0].message.content == want and "verify_steps" not in off.timings, off.timings
    for bad in ("yes", 1, {"maxDraft": 2}):
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as e:
                client.chat.completions.create(model=MODEL, stream=stream, extra_body={"speculative": bad}, **req)
            assert e.value.body["param"] == "speculative" and e.value.body["type"] == "invalid_request_error"
            assert e.value.body["message"].startswith("speculative must be true or false"), e.value.body


def node_pid(server: Server) -> int:
    """The pid of the server's Node.js process (a child running api_host.js)."""
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            if "api_host.js" in Path(f"/proc/{pid}/cmdline").read_text():
                return int(pid)
    raise AssertionError("the server has no Node.js child running api_host.js")


def test_a_node_process_that_dies_is_a_500_and_is_started_again(server, bundle):
    client = server.client()
    stream = iter(client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=LONG, temperature=0,
                                                 stream=True))
    next(stream), next(stream)
    os.kill(node_pid(server), signal.SIGKILL)
    with pytest.raises(openai.APIError, match="the Node.js process running the models exited"):
        for _ in stream:  # an error after the stream began: a `data: {"error": ...}` event
            pass
    want = direct(bundle, [dict(messages=HI, max_tokens=8, temperature=0)])[0]
    res = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=8, temperature=0)
    assert res.choices[0].message.content == want["choices"][0]["message"]["content"]


def test_without_node_api_fails_at_start_in_one_line(bundle, tmp_path):
    r = subprocess.run([sys.executable, "-m", "packager.cli", "serve", str(bundle), "--api", "--port", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": str(tmp_path)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr == ("error: --api runs the models in Node.js: install Node.js 20 or newer (`node` is not on "
                        "PATH)\n")


def test_speculative_without_api_fails_in_one_line(bundle):
    r = subprocess.run([sys.executable, "-m", "packager.cli", "serve", str(bundle), "--speculative", "--port", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.startswith("error: --speculative is for the OpenAI-compatible API: add --api") and \
        r.stderr.count("\n") == 1, r.stderr


@pytest.mark.parametrize("script, message", [
    ('echo \'ready {"node": "18.19.0"}\'; cat >/dev/null', r"--api needs Node.js 20 or newer; .*/node is 18\.19\.0"),
    ("echo 'SyntaxError: Unexpected token' >&2; exit 1",
     r"the Node.js process running the models did not start \(SyntaxError: Unexpected token\)"),
])
def test_a_node_that_cannot_run_the_host_is_one_line(tmp_path, script, message):
    """`node` too old, or a host that fails at start: a PackError (one line), no process left."""
    from packager.errors import PackError
    from packager.node_api import NodeApiHost

    node = tmp_path / "node"
    node.write_text(f"#!/bin/sh\n{script}\n")
    node.chmod(0o755)
    host = NodeApiHost(tmp_path / "api_host.js", node=str(node))
    (tmp_path / "api_host.js").write_text("")
    with pytest.raises(PackError, match=message) as e:
        host.start()
    assert "\n" not in str(e.value) and host.proc is None


@pytest.mark.slow
def test_smollm2_answers_are_the_runtimes(smollm2_bundle):
    """SmolLM2 (the bundle other tests check against transformers and the numpy reference)
    through the API of a server started with --speculative: greedy and streamed, the
    runtime's own plain answers; asked to repeat a sentence, drafts copied from the prompt
    are accepted; a request's "speculative": false runs without."""
    require_node()
    bundle = smollm2_bundle("q4f32", context_window=512)
    req = dict(messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=12,
               temperature=0)
    # (long: drafting is adaptive, and where the machine's timings make it decline drafts, it
    # still checks one after 16 declined in a row; an answer that copies accepts it)
    sentence = ("The quick brown fox jumps over the lazy dog near the old river bank, then runs across the wide "
                "green field to the small wooden house where the farmer keeps his chickens, goats and two cats.")
    repeat = dict(messages=[{"role": "user", "content": f"Repeat this sentence exactly: {sentence}"}], max_tokens=64,
                  temperature=0)
    want, want_repeat = (w["choices"][0]["message"]["content"] for w in direct(bundle, [req, repeat]))
    s = Server([bundle], args=("--speculative",))
    try:
        s.wait_for_line(r"speculative decoding \(prompt lookup\) is on", 0)
        client = s.client()
        model = client.models.list().data[0].id
        res = client.chat.completions.create(model=model, **req)
        streamed = "".join(c.choices[0].delta.content or ""
                           for c in client.chat.completions.create(model=model, stream=True, **req))
        copied = client.chat.completions.create(model=model, **repeat)
        plain = client.chat.completions.create(model=model, extra_body={"speculative": False}, **repeat)
    finally:
        s.stop()
    assert res.choices[0].message.content == streamed == want
    assert "verify_steps" in res.timings, res.timings  # (on by default)
    assert copied.choices[0].message.content == plain.choices[0].message.content == want_repeat
    assert sentence[:60] in want_repeat, want_repeat  # (the model did repeat it)
    print(f"SmolLM2 q4f32 via --api --speculative, asked to repeat a sentence: {copied.timings}")
    assert copied.timings["accepted_tokens"] > 0, copied.timings
    assert "verify_steps" not in plain.timings, plain.timings
