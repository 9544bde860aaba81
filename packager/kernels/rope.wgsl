// Rotary position embedding, Hugging Face convention (rotate_half, non-interleaved):
// for head vector x and i < HALF, with a = pos * inv_freq[i], c = SCALE cos a, s = SCALE sin a:
//   x'[i] = x[i] c - x[i + HALF] s,   x'[i + HALF] = x[i + HALF] c + x[i] s
// applied in place to q [seq, NH, HD] and k [seq, NKV, HD]; pos = past_len + t. Only the
// first 2 HALF values of a head rotate (partial rotary when 2 HALF < HD); the rest pass.
// inv_freq is baked per model (default / linear / llama3 / longrope, computed in f32 as
// transformers does; packager/rope.py); SCALE is longrope's attention factor (1 otherwise).
// The angle is the f32 product, reduced mod 2 pi before cos/sin.
// bindings: 0 uniform, 1 q act[], 2 k act[]
// workgroups: grid over seq_len * (NH + NKV) * HALF threads (x, y; {{WG}} per workgroup)
{{PRELUDE}}
const NH: u32 = {{NH}}u;
const NKV: u32 = {{NKV}}u;
const HD: u32 = {{HD}}u;
const HALF: u32 = {{HALF}}u;
const SCALE: f32 = {{SCALE}};

var<private> inv_freq: array<f32, HALF> = array<f32, HALF>({{INV_FREQ}});

struct Params { seq_len: u32, past_len: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> q: array<act>;
@group(0) @binding(2) var<storage, read_write> k: array<act>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  let idx = (wid.y * nwg.x + wid.x) * {{WG}}u + tid;
  if (idx >= p.seq_len * (NH + NKV) * HALF) { return; }
  let i = idx % HALF;
  let h = (idx / HALF) % (NH + NKV);
  let t = idx / (HALF * (NH + NKV));
  let a = f32(p.past_len + t) * inv_freq[i];
  // Cody-Waite reduction: 2 pi = 6.28125 + 1.9353071795864769e-3 (the first part has
  // 8 significant bits, so n * 6.28125 is exact for positions below 2^16 * 2 pi).
  let n = round(a * 0.15915494309189535);
  let r = (a - n * 6.28125) - n * 1.9353071795864769e-3;
  let c = cos(r) * SCALE;
  let s = sin(r) * SCALE;
  if (h < NH) {
    let b = (t * NH + h) * HD + i;
    let x1 = f32(q[b]);
    let x2 = f32(q[b + HALF]);
    q[b] = act(x1 * c - x2 * s);
    q[b + HALF] = act(x2 * c + x1 * s);
  } else {
    let b = (t * NKV + h - NH) * HD + i;
    let x1 = f32(k[b]);
    let x2 = f32(k[b + HALF]);
    k[b] = act(x1 * c - x2 * s);
    k[b + HALF] = act(x2 * c + x1 * s);
  }
}
