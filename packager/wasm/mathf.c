/* Elementary functions for the kernels (freestanding: no libm).
 *
 * exp: e^x = 2^n e^r with n = round(x / ln 2), r = x - n ln 2 (two-part ln 2, |r| <=
 * 0.35), e^r by its Taylor polynomial to degree 7 (truncation < 6e-9 relative). x is
 * clamped to [-87, 88] so that 2^n stays a normal f32: below e^-87 (~1.6e-38) the
 * result is not tiny enough to be exact, which no kernel can observe (softmax weights
 * are relative to e^0 = 1; silu divides by 1 + e^-x).
 * sincos: the f32 angle is reduced by pi/2 in f64 (exact enough for any position),
 * then sin and cos of |r| <= pi/4 by Taylor polynomials in f64, rounded once to f32.
 */
#include "llmpack.h"

#define LN2_HI 0.693145751953125f
#define LN2_LO 1.42860682030941723212e-6f
#define LOG2E 1.44269504088896341f

/* 1/k! for k = 7 .. 2 */
#define C7 1.98412698412698413e-4f
#define C6 1.38888888888888889e-3f
#define C5 8.33333333333333333e-3f
#define C4 4.16666666666666667e-2f
#define C3 1.66666666666666667e-1f
#define C2 0.5f

float exp_f32(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float n = __builtin_nearbyintf(x * LOG2E);
  float r = (x - n * LN2_HI) - n * LN2_LO;
  float p = C7;
  p = p * r + C6;
  p = p * r + C5;
  p = p * r + C4;
  p = p * r + C3;
  p = p * r + C2;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * f32_bits((uint32_t)((int32_t)n + 127) << 23);
}

v128_t exp_f32x4(v128_t x) {
  x = wasm_f32x4_pmax(wasm_f32x4_splat(-87.0f), wasm_f32x4_pmin(wasm_f32x4_splat(88.0f), x));
  v128_t n = wasm_f32x4_nearest(wasm_f32x4_mul(x, wasm_f32x4_splat(LOG2E)));
  v128_t r = wasm_f32x4_sub(wasm_f32x4_sub(x, wasm_f32x4_mul(n, wasm_f32x4_splat(LN2_HI))),
                            wasm_f32x4_mul(n, wasm_f32x4_splat(LN2_LO)));
  v128_t p = wasm_f32x4_splat(C7);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(C6));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(C5));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(C4));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(C3));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(C2));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f));
  v128_t scale = wasm_i32x4_shl(wasm_i32x4_add(wasm_i32x4_trunc_sat_f32x4(n), wasm_i32x4_splat(127)), 23);
  return wasm_f32x4_mul(p, scale);
}

#define PIO2_HI 1.57079632673412561417e+00 /* first 33 bits of pi/2 */
#define PIO2_LO 6.07710050650619224932e-11 /* pi/2 - PIO2_HI */
#define TWO_OVER_PI 6.36619772367581382433e-01

static double sin_poly(double r) { /* |r| <= pi/4 */
  double r2 = r * r;
  double p = -7.64716373181981647590e-13; /* -1/15! */
  p = p * r2 + 1.60590438368216145994e-10; /* 1/13! */
  p = p * r2 - 2.50521083854417187751e-08; /* -1/11! */
  p = p * r2 + 2.75573192239858906526e-06; /* 1/9! */
  p = p * r2 - 1.98412698412698412526e-04; /* -1/7! */
  p = p * r2 + 8.33333333333333321769e-03; /* 1/5! */
  p = p * r2 - 1.66666666666666657415e-01; /* -1/3! */
  return r + r * r2 * p;
}

static double cos_poly(double r) {
  double r2 = r * r;
  double p = 4.77947733238738529744e-14; /* 1/16! */
  p = p * r2 - 1.14707455977297247139e-11; /* -1/14! */
  p = p * r2 + 2.08767569878680989792e-09; /* 1/12! */
  p = p * r2 - 2.75573192239858906526e-07; /* -1/10! */
  p = p * r2 + 2.48015873015873015658e-05; /* 1/8! */
  p = p * r2 - 1.38888888888888894189e-03; /* -1/6! */
  p = p * r2 + 4.16666666666666643537e-02; /* 1/4! */
  p = p * r2 - 0.5;
  return 1.0 + r2 * p;
}

void sincos_f32(float a, float *s, float *c) {
  double x = (double)a;
  double k = __builtin_nearbyint(x * TWO_OVER_PI);
  double r = (x - k * PIO2_HI) - k * PIO2_LO;
  double sr = sin_poly(r), cr = cos_poly(r);
  int q = (int)(int64_t)k & 3;
  double sv = q == 0 ? sr : q == 1 ? cr : q == 2 ? -sr : -cr;
  double cv = q == 0 ? cr : q == 1 ? -sr : q == 2 ? -cr : sr;
  *s = (float)sv;
  *c = (float)cv;
}
