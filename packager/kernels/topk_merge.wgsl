// Top-K sampling candidates, second pass (after topk_partial): merges the groups' lists into
// the vocabulary's K largest values and combines their softmax statistics. One workgroup;
// thread g < groups follows list g (sorted, best first), and each of the K rounds is a tree
// reduction of the lists' heads, whose winner advances. Writes `out` (2 K + 2 words):
//   [0, 2 K)    the K largest logits as (id, f32 bits) pairs, best first: larger value, then
//               lower id; NaN and -inf never listed; (NONE, -inf bits) past the last listed
//   2 K         sum over every listed logit of exp((x - max) * inv_t), as f32 bits (max: the
//               largest logit): the softmax denominator at temperature 1 / inv_t
//   2 K + 1     the count of listed logits (neither NaN nor -inf)
// Ordering and clamping as topk_partial's.
// bindings: 0 uniform, 1 part u32[groups * (2 K + 4)], 2 inv_t f32[1], 3 out u32[2 K + 2]
// workgroups: (1, 1, 1); groups <= WG
{{PRELUDE}}
const WG: u32 = {{WG}}u;
const K: u32 = {{K}}u;
const NONE: u32 = 0xffffffffu;
const STRIDE: u32 = 2u * K + 4u;
const NEG_INF: u32 = 0xff800000u;
const LIMIT: f32 = 1e30;
const FLOOR: f32 = -200.0;
const MAX_INV_T: f32 = 1048576.0;

struct Params { groups: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<u32>;
@group(0) @binding(2) var<storage, read> inv_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

var<workgroup> red_k: array<u32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> red_s: array<f32, WG>;

fn key_of(bits: u32) -> u32 {
  if ((bits & 0x7fffffffu) > 0x7f800000u || bits == NEG_INF) { return 0u; }
  var b = bits;
  if (b == 0x80000000u) { b = 0u; }
  if ((b & 0x80000000u) != 0u) { return ~b; }
  return b | 0x80000000u;
}

fn value_of(key: u32) -> f32 {
  if ((key & 0x80000000u) != 0u) { return bitcast<f32>(key & 0x7fffffffu); }
  return bitcast<f32>(~key);
}

fn beats(k: u32, i: u32, bk: u32, bi: u32) -> bool {
  return k != 0u && (k > bk || (k == bk && i < bi));
}

@compute @workgroup_size({{WG}})
fn main(@builtin(local_invocation_index) tid: u32) {
  let rec = tid * STRIDE;
  let mine = tid < p.groups;
  var head = 0u;  // the next pair of this thread's list
  var hk = 0u;
  var hi = NONE;
  if (mine) {
    hi = part[rec];
    hk = select(0u, key_of(part[rec + 1u]), hi != NONE);
  }
  var top = 0u;  // the key of the largest logit
  for (var r = 0u; r < K; r++) {
    red_k[tid] = hk;
    red_i[tid] = hi;
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
    if (wk != 0u && hi == wi) {  // ids are unique: this list's head won
      out[2u * r] = wi;
      out[2u * r + 1u] = part[rec + 2u * head + 1u];
      head += 1u;
      hk = 0u;
      hi = NONE;
      if (head < K) {
        hi = part[rec + 2u * head];
        hk = select(0u, key_of(part[rec + 2u * head + 1u]), hi != NONE);
      }
    }
    if (wk == 0u && tid == 0u) {
      out[2u * r] = NONE;
      out[2u * r + 1u] = NEG_INF;
    }
    if (r == 0u) { top = wk; }
    workgroupBarrier();
  }

  // the vocabulary's softmax statistics: each group's sum rescaled from its max to the top
  let it = min(inv_t[0], MAX_INV_T);
  let m = clamp(value_of(top), -LIMIT, LIMIT);
  var s = 0.0;
  var c = 0u;
  if (mine && top != 0u) {
    c = part[rec + 2u * K + 2u];
    if (c != 0u) {
      let mg = clamp(bitcast<f32>(part[rec + 2u * K]), -LIMIT, LIMIT);
      s = bitcast<f32>(part[rec + 2u * K + 1u]) * exp(max((mg - m) * it, FLOOR));
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
    out[2u * K] = bitcast<u32>(red_s[0]);
    out[2u * K + 1u] = red_k[0];
  }
}
