/**
 * Plan expressions: the small integer language in which an execution plan writes
 * uniform values, buffer sizes and workgroup counts over the dynamic dimensions
 * (docs/plan.md). The Python packager evaluates the same grammar; both are tested
 * against tests/data/expr_cases.json.
 *
 *   expr   := term (("+" | "-") term)*
 *   term   := factor (("*" | "/" | "%") factor)*
 *   factor := INT | IDENT | IDENT "(" expr "," expr ")" | "(" expr ")"
 *
 * `/` is floor division, `cdiv(a, b)` = ceil(a / b); `min`, `max`. No unary minus.
 * Anything else (unknown names, division by zero, stray tokens) throws ExprError, and
 * so does an expression past the limits that packager/plan_expr.py applies: more than
 * MAX_TOKENS tokens, factors (parentheses, calls) nested deeper than MAX_DEPTH, a number
 * of more than MAX_DIGITS digits (leading zeros aside). They keep the recursive parser
 * off the stack limit, so a hostile plan gets an ExprError, never a RangeError.
 * Plans are evaluated once per dispatch per step, so parsed trees are cached by
 * source text.
 */

export class ExprError extends Error {
  override name = "ExprError";
}

export type Env = Readonly<Record<string, number>>;

type Node =
  | { k: "num"; v: number }
  | { k: "var"; name: string }
  | { k: "bin"; op: "+" | "-" | "*" | "/" | "%"; a: Node; b: Node }
  | { k: "call"; fn: "cdiv" | "min" | "max"; a: Node; b: Node };

const FUNCTIONS = new Set(["cdiv", "min", "max"]);
export const MAX_TOKENS = 256; // an operator chain nests the tree one level per operator
export const MAX_DEPTH = 32; // nested factors, counted as plan_expr.py counts them
export const MAX_DIGITS = 16; // 2^53, the largest exact JS integer, has 16 digits

function head(src: string): string {
  return JSON.stringify(src.length > 40 ? `${src.slice(0, 40)}…` : src);
}

type Token = { t: "num"; v: number } | { t: "id"; v: string } | { t: "op"; v: string };

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src.charAt(i);
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      i++;
      continue;
    }
    if (out.length === MAX_TOKENS) throw new ExprError(`plan expression longer than ${MAX_TOKENS} tokens: ${head(src)}`);
    if (c >= "0" && c <= "9") {
      let j = i;
      while (j < src.length && src.charAt(j) >= "0" && src.charAt(j) <= "9") j++;
      const digits = src.slice(i, j).replace(/^0+/, "");
      if (digits.length > MAX_DIGITS) throw new ExprError(`number ${digits.slice(0, 20)}… is too large in ${head(src)}`);
      const v = Number(src.slice(i, j));
      if (!Number.isSafeInteger(v)) throw new ExprError(`integer literal too large in ${head(src)}`);
      out.push({ t: "num", v });
      i = j;
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i;
      while (j < src.length && /[A-Za-z0-9_]/.test(src.charAt(j))) j++;
      out.push({ t: "id", v: src.slice(i, j) });
      i = j;
    } else if ("+-*/%(),".includes(c)) {
      out.push({ t: "op", v: c });
      i++;
    } else {
      throw new ExprError(`unexpected character ${JSON.stringify(c)} in ${JSON.stringify(src)}`);
    }
  }
  return out;
}

class Parser {
  private i = 0;
  private depth = 0;
  constructor(private readonly toks: Token[], private readonly src: string) {}

  parse(): Node {
    if (this.toks.length === 0) throw this.error("empty expression");
    const node = this.expr();
    const extra = this.toks[this.i];
    if (extra) throw this.error(`unexpected ${JSON.stringify(extra.v)}`);
    return node;
  }

  private error(msg: string): ExprError {
    return new ExprError(`${msg} in plan expression ${JSON.stringify(this.src)}`);
  }

  private peekOp(...ops: string[]): string | null {
    const tok = this.toks[this.i];
    return tok && tok.t === "op" && ops.includes(tok.v) ? tok.v : null;
  }

  private expect(op: string): void {
    if (!this.peekOp(op)) throw this.error(`expected ${JSON.stringify(op)}`);
    this.i++;
  }

  private expr(): Node {
    let node = this.term();
    for (let op = this.peekOp("+", "-"); op; op = this.peekOp("+", "-")) {
      this.i++;
      node = { k: "bin", op: op as "+" | "-", a: node, b: this.term() };
    }
    return node;
  }

  private term(): Node {
    let node = this.factor();
    for (let op = this.peekOp("*", "/", "%"); op; op = this.peekOp("*", "/", "%")) {
      this.i++;
      node = { k: "bin", op: op as "*" | "/" | "%", a: node, b: this.factor() };
    }
    return node;
  }

  private factor(): Node {
    if (++this.depth > MAX_DEPTH) throw this.error(`expression nested deeper than ${MAX_DEPTH}`);
    try {
      return this.factorBody();
    } finally {
      this.depth--;
    }
  }

  private factorBody(): Node {
    const tok = this.toks[this.i++];
    if (!tok) throw this.error("unexpected end");
    if (tok.t === "num") return { k: "num", v: tok.v };
    if (tok.t === "id") {
      if (!this.peekOp("(")) return { k: "var", name: tok.v };
      if (!FUNCTIONS.has(tok.v)) throw this.error(`unknown function ${tok.v}`);
      this.i++;
      const a = this.expr();
      this.expect(",");
      const b = this.expr();
      this.expect(")");
      return { k: "call", fn: tok.v as "cdiv" | "min" | "max", a, b };
    }
    if (tok.v === "(") {
      const node = this.expr();
      this.expect(")");
      return node;
    }
    throw this.error(`unexpected ${JSON.stringify(tok.v)}`);
  }
}

const cache = new Map<string, Node>();

function parse(src: string): Node {
  let node = cache.get(src);
  if (!node) {
    node = new Parser(tokenize(src), src).parse();
    cache.set(src, node);
  }
  return node;
}

function floorDiv(a: number, b: number, src: string): number {
  if (b === 0) throw new ExprError(`division by zero in plan expression ${JSON.stringify(src)}`);
  return Math.floor(a / b);
}

function binary(op: "+" | "-" | "*" | "/" | "%", a: number, b: number, src: string): number {
  switch (op) {
    case "+": return a + b;
    case "-": return a - b;
    case "*": return a * b;
    case "/": return floorDiv(a, b, src);
    case "%": return a - b * floorDiv(a, b, src); // Python semantics: sign of b
  }
}

function evalNode(n: Node, env: Env, src: string): number {
  switch (n.k) {
    case "num":
      return n.v;
    case "var": {
      const v = Object.prototype.hasOwnProperty.call(env, n.name) ? env[n.name] : undefined;
      if (typeof v !== "number" || !Number.isInteger(v)) {
        throw new ExprError(`unknown variable ${n.name} in plan expression ${JSON.stringify(src)}`);
      }
      return v;
    }
    case "bin":
      return binary(n.op, evalNode(n.a, env, src), evalNode(n.b, env, src), src);
    case "call": {
      const a = evalNode(n.a, env, src);
      const b = evalNode(n.b, env, src);
      if (n.fn === "cdiv") return -floorDiv(-a, b, src);
      return n.fn === "min" ? Math.min(a, b) : Math.max(a, b);
    }
  }
}

/** Evaluates a plan expression (a number is returned as is). Throws ExprError. */
export function evalExpr(src: string | number, env: Env): number {
  if (typeof src === "number") {
    if (!Number.isInteger(src)) throw new ExprError(`plan value ${src} is not an integer`);
    return src;
  }
  const v = evalNode(parse(src), env, src);
  if (!Number.isSafeInteger(v)) throw new ExprError(`plan expression ${JSON.stringify(src)} overflows (${v})`);
  return v;
}

/** Parses without evaluating, e.g. to validate a plan at load time. Throws ExprError. */
export function checkExpr(src: string): void {
  parse(src);
}
