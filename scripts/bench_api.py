"""How fast `llmpack serve BUNDLE --api` answers through the official `openai` client.

    python scripts/bench_api.py BUNDLE [--runs 3] [--new-tokens 64]

Starts the server on a free port, sends one request (the engine loads on it), then
`--runs` streamed greedy requests, and prints JSON: the first answer's wall time (load
included), and per run the time to the first content chunk, the client's decode rate
(content chunks after the first over the time they took) and the runtime's own decode
rate from the last chunk's `timings`: the gap between the last two is what the HTTP and
pipe hops cost. Medians over the runs.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import openai


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=64)
    a = ap.parse_args()
    proc = subprocess.Popen([sys.executable, "-m", "packager.cli", "serve", str(a.bundle), "--api", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = re.search(r"at (http://\S+/)", proc.stdout.readline()).group(1)
        client = openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0)
        model = client.models.list().data[0].id
        messages = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
        t = time.perf_counter()
        client.chat.completions.create(model=model, messages=messages, max_tokens=1, temperature=0)
        first = time.perf_counter() - t
        rows = []
        for i in range(a.runs):
            ask = [{"role": "user", "content": f"{messages[0]['content']} ({i})"}]  # no prefix reuse of the answer
            t0 = time.perf_counter()
            stamps, last = [], None
            for chunk in client.chat.completions.create(model=model, messages=ask, max_tokens=a.new_tokens,
                                                        temperature=0, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    stamps.append(time.perf_counter())
                last = chunk
            timings = last.model_extra["timings"]
            rows.append({"ttft_s": stamps[0] - t0,
                         "client_decode_tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
                         "runtime_decode_tok_s": timings["decode_tokens"] / (timings["decode_ms"] / 1000),
                         "completion_tokens": last.usage.completion_tokens})
        print(json.dumps({"model": model, "first_answer_with_load_s": round(first, 3), "runs": a.runs,
                          **{k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}}, indent=2))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)


if __name__ == "__main__":
    main()
