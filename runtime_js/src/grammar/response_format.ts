/**
 * OpenAI's `response_format` (and the grammar form WebLLM accepts) -> what to constrain
 * the output to. Checked here, before anything runs: a malformed one is a TypeError
 * that names the field.
 */

/** What a request's output must match. */
export type GrammarSpec =
  /** any JSON object (OpenAI's json_object) */
  | { kind: "json_object" }
  /** JSON valid against `schema` */
  | { kind: "json_schema"; schema: Record<string, unknown> | boolean }
  /** an EBNF/GBNF grammar (rule `root` unless named) */
  | { kind: "grammar"; grammar: string; root?: string }
  /** an XGrammar structural tag (tool calls: tags around JSON, see tools.ts) */
  | { kind: "structural_tag"; format: Record<string, unknown> };

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; json_schema: { name: string; description?: string; schema?: Record<string, unknown>; strict?: boolean | null } }
  /** not in OpenAI's API: WebLLM's form (EBNF; GBNF as llama.cpp and wllama write it parses too) */
  | { type: "grammar"; grammar: string; root?: string };

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v);

/** The spec a response_format asks for; null for none or {type: "text"}. */
export function responseFormatSpec(rf: unknown): GrammarSpec | null {
  if (rf == null) return null;
  if (!isObject(rf) || typeof rf.type !== "string") {
    throw new TypeError('response_format must be an object with a type: "text", "json_object", "json_schema" or "grammar"');
  }
  switch (rf.type) {
    case "text":
      return null;
    case "json_object":
      return { kind: "json_object" };
    case "json_schema": {
      const js = rf.json_schema;
      if (!isObject(js)) throw new TypeError('response_format {type: "json_schema"} needs json_schema: {name, schema, strict?}');
      if (typeof js.name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(js.name)) {
        throw new TypeError("response_format.json_schema.name must be 1 to 64 letters, digits, _ or - (as OpenAI requires)");
      }
      const schema = js.schema ?? {};
      if (!isObject(schema) && typeof schema !== "boolean") throw new TypeError("response_format.json_schema.schema must be a JSON schema object");
      return { kind: "json_schema", schema };
    }
    case "grammar": {
      if (typeof rf.grammar !== "string" || !rf.grammar.trim()) throw new TypeError('response_format {type: "grammar"} needs grammar: an EBNF/GBNF string');
      if (rf.root !== undefined && typeof rf.root !== "string") throw new TypeError("response_format.root must be a rule name");
      return { kind: "grammar", grammar: rf.grammar, root: rf.root as string | undefined };
    }
    default:
      throw new TypeError(`response_format type "${rf.type}" is not supported; use "text", "json_object", "json_schema" or "grammar"`);
  }
}
