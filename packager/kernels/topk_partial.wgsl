// Top-K sampling candidates, first pass (the plan's optional "topk" entry; topk_merge is the
// second). Workgroup w takes the WG * E logits from w * WG * E and writes to its record of
// `part` (2 K + 4 words):
//   [0, 2 K)    its K largest values as (id, f32 bits) pairs, best first: larger value, then
//               lower id; NaN and -inf never listed; (NONE, -inf bits) past the last listed
//   2 K         the f32 bits of its largest value
//   2 K + 1     sum of exp((x - max) * inv_t) over its listed values, as f32 (softmax statistics
//               that topk_merge rescales to the vocabulary's max)
//   2 K + 2     the count of its listed values (neither NaN nor -inf)
// Values are compared as order-preserving u32 keys of their bits (-0 as +0): exact, and immune
// to compilers that assume no NaN or infinity. Each thread holds E keys in registers (strided
// by WG); each of the K rounds is a tree reduction of the threads' best keys, after which the
// winner moves to its next best.
// bindings: 0 uniform, 1 x f32[n] (the logits), 2 inv_t f32[1] (1 / temperature),
//           3 part u32[groups * (2 K + 4)]
// workgroups: (groups = cdiv(n, WG * E), 1, 1)
{{PRELUDE}}
const WG: u32 = {{WG}}u;
const K: u32 = {{K}}u;
const E: u32 = {{E}}u;
const NONE: u32 = 0xffffffffu;
const STRIDE: u32 = 2u * K + 4u;
const NEG_INF: u32 = 0xff800000u;
// exp arguments are clamped to [FLOOR, 0] (below it exp is 0 in f32 anyway) and values to
// [-LIMIT, LIMIT], so that no intermediate overflows (the runtime writes inv_t <= 2^20 and
// reads the sums only when the largest value is within LIMIT)
const LIMIT: f32 = 1e30;
const FLOOR: f32 = -200.0;
const MAX_INV_T: f32 = 1048576.0;

struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> inv_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<u32>;

var<workgroup> red_k: array<u32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> red_s: array<f32, WG>;

// 0: not listed (NaN, -inf); else larger keys are larger values (the smallest listed key,
// that of -f32::MAX, is 0x00800000)
fn key_of(bits: u32) -> u32 {
  if ((bits & 0x7fffffffu) > 0x7f800000u || bits == NEG_INF) { return 0u; }
  var b = bits;
  if (b == 0x80000000u) { b = 0u; }  // -0 == +0, as the CPU compares them
  if ((b & 0x80000000u) != 0u) { return ~b; }
  return b | 0x80000000u;
}

fn value_of(key: u32) -> f32 {
  if ((key & 0x80000000u) != 0u) { return bitcast<f32>(key & 0x7fffffffu); }
  return bitcast<f32>(~key);
}

// (k, i) beats (bk, bi): a larger key, or the same key at a lower id; key 0 never beats
fn beats(k: u32, i: u32, bk: u32, bi: u32) -> bool {
  return k != 0u && (k > bk || (k == bk && i < bi));
}

@compute @workgroup_size({{WG}})
fn main(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let base = wid.x * WG * E;
  var keys: array<u32, E>;
  for (var j = 0u; j < E; j++) {
    let i = base + j * WG + tid;
    keys[j] = 0u;
    if (i < p.n) { keys[j] = key_of(bitcast<u32>(x[i])); }
  }
  // this thread's best (key 0: none left)
  var bk = 0u;
  var bi = NONE;
  for (var j = 0u; j < E; j++) {
    let i = base + j * WG + tid;
    if (beats(keys[j], i, bk, bi)) { bk = keys[j]; bi = i; }
  }
  let rec = wid.x * STRIDE;
  var top = 0u;  // the key of the group's largest value
  for (var r = 0u; r < K; r++) {
    red_k[tid] = bk;
    red_i[tid] = bi;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
      if (tid < st && beats(red_k[tid + st], red_i[tid + st], red_k[tid], red_i[tid])) {
        red_k[tid] = red_k[tid + st];
        red_i[tid] = red_i[tid + st];
      }
      workgroupBarrier();
    }
    let wk = red_k[0];
    let wi = red_i[0];
    if (r == 0u) { top = wk; }
    if (tid == 0u) {
      if (wk == 0u) {
        part[rec + 2u * r] = NONE;
        part[rec + 2u * r + 1u] = NEG_INF;
      } else {
        part[rec + 2u * r] = wi;
        part[rec + 2u * r + 1u] = bitcast<u32>(x[wi]);  // the logit's own bits (-0 stays -0)
      }
    }
    if (wk != 0u && bi == wi) {  // this thread's best was taken: its next best is below it
      bk = 0u;
      bi = NONE;
      for (var j = 0u; j < E; j++) {
        let i = base + j * WG + tid;
        let k = keys[j];
        if ((k < wk || (k == wk && i > wi)) && beats(k, i, bk, bi)) { bk = k; bi = i; }
      }
    }
    workgroupBarrier();  // every thread read red_*[0] before the next round writes them
  }

  // softmax statistics of the group, relative to its largest value
  let it = min(inv_t[0], MAX_INV_T);
  let m = clamp(value_of(top), -LIMIT, LIMIT);
  var s = 0.0;
  var c = 0u;
  if (top != 0u) {
    for (var j = 0u; j < E; j++) {
      if (keys[j] != 0u) {
        let v = clamp(value_of(keys[j]), -LIMIT, LIMIT);
        s += exp(max((v - m) * it, FLOOR));
        c += 1u;
      }
    }
  }
  red_s[tid] = s;
  red_k[tid] = c;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st >>= 1u) {
    if (tid < st) {
      red_s[tid] += red_s[tid + st];
      red_k[tid] += red_k[tid + st];
    }
    workgroupBarrier();
  }
  if (tid == 0u) {
    part[rec + 2u * K] = bitcast<u32>(value_of(top));
    if (top == 0u) { part[rec + 2u * K] = NEG_INF; }
    part[rec + 2u * K + 1u] = bitcast<u32>(red_s[0]);
    part[rec + 2u * K + 2u] = red_k[0];
    part[rec + 2u * K + 3u] = 0u;
  }
}
