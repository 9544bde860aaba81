/**
 * Reference tokenizer data from Python (test/fixtures/tokenizer_cases.py), generated
 * once and cached under node_modules/.cache (keyed by the script's content), or taken
 * from $LLMPACK_TOKENIZER_CASES when a caller (tests/test_js_runtime.py) made it.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import { BundleTokenizer } from "../src/tokenizer.js";
import { runtimeDir } from "./helpers.js";

export interface TokenizerCases {
  dir: string;
  chat_template: string;
  bos_token: string;
  eos_token: string;
  eos_token_id: number;
  texts: { text: string; ids: number[]; ids_special: number[]; decoded: string; decoded_skip: string }[];
  chats: { messages: { role: string; content: string }[]; rendered: string; ids: number[] }[];
}

/** The cases, or a string saying why they cannot be had (the test then skips). */
export function tokenizerCases(): TokenizerCases | string {
  let dir = process.env.LLMPACK_TOKENIZER_CASES;
  if (!dir) {
    const script = path.join(runtimeDir(), "test", "fixtures", "tokenizer_cases.py");
    const key = createHash("sha256").update(readFileSync(script)).digest("hex").slice(0, 16);
    dir = path.join(runtimeDir(), "node_modules", ".cache", "llmpack-test", `tokenizer-${key}`);
    if (!existsSync(path.join(dir, "cases.json"))) {
      const tmp = `${dir}.tmp-${process.pid}`;
      mkdirSync(tmp, { recursive: true });
      const python = process.env.PYTHON || "python3";
      const r = spawnSync(python, [script, tmp], { encoding: "utf8", timeout: 300_000 });
      if (r.error || r.status === 3) {
        rmSync(tmp, { recursive: true, force: true });
        return `Python reference unavailable (${r.error?.message ?? r.stderr.trim().split("\n").at(-1)})`;
      }
      if (r.status !== 0) throw new Error(`${script} failed (${r.status}):\n${r.stderr}`);
      rmSync(dir, { recursive: true, force: true });
      renameSync(tmp, dir);
    }
  }
  return { dir, ...JSON.parse(readFileSync(path.join(dir, "cases.json"), "utf8")) };
}

/** SmolLM2's tokenizer as the runtime builds it from a bundle, from the cases' files. */
export function smollm2Tokenizer(cases: TokenizerCases | string): BundleTokenizer {
  if (typeof cases === "string") throw new Error(cases);
  const json = JSON.parse(readFileSync(path.join(cases.dir, "tokenizer.json"), "utf8"));
  const config = JSON.parse(readFileSync(path.join(cases.dir, "tokenizer_config.json"), "utf8"));
  return new BundleTokenizer(
    json,
    config,
    { file: "tokenizer.json", config_file: "tokenizer_config.json", chat_template: cases.chat_template, bos_token: cases.bos_token, eos_token: cases.eos_token, add_bos_token: false },
    { eos_token_ids: [cases.eos_token_id] },
  );
}
