// What one core's memory allows the CPU kernels' pass structure, without their compute: the
// schedules of the fused forward and backward over NCHW fp32 samples, as bare AVX-512 loops, beside
// a copy and a streaming add. docs/cpu-results.md has the numbers and what they decided.
//
//   g++ -O3 -march=native -std=c++17 benchmarks/cpu_pass_schedules.cpp -o /tmp/cpu_pass_schedules
//   /tmp/cpu_pass_schedules          (needs AVX-512F; one thread; min of 40 calls; UCI-HAR (128,64,64,9))
//
// fwd        per sample: pool pass (x from memory), then scale pass (x again, from L2; out by
//            non-temporal stores), as forward_item with a whole sample per band
// bwd        per sample: rho pass (x, g from memory), then dx pass (g again, from L2; dx streamed)
// bwd+pf     the same, prefetching the next sample's x and g into L2 during the dx pass
// bwd interl the next sample's rho interleaved, four channels at a time, with this sample's dx
//            pass (the reads of one overlapping the writes of the other)
// copy       memcpy x -> out (x.clone()'s traffic, 2N bytes); add_xg: out = x + g streamed (3N)
#include <immintrin.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bare_loop_timer.h"

namespace {
constexpr int kB = 128, kC = 64, kP = 64 * 9;  // samples, channels, pixels per channel (a multiple of 16)
constexpr size_t kSample = size_t(kC) * kP;
float *x, *g, *out;
alignas(64) float acc[2][kP], s[kP], gam[kP];

void rho_4_channels(const float* xc, const float* gc, float* r) {  // r += sum of 4 channels of x * g
  for (int i = 0; i < kP; i += 16) {
    __m512 a = _mm512_load_ps(r + i), b = _mm512_setzero_ps();
    a = _mm512_fmadd_ps(_mm512_loadu_ps(xc + i), _mm512_loadu_ps(gc + i), a);
    b = _mm512_fmadd_ps(_mm512_loadu_ps(xc + kP + i), _mm512_loadu_ps(gc + kP + i), b);
    a = _mm512_fmadd_ps(_mm512_loadu_ps(xc + 2 * kP + i), _mm512_loadu_ps(gc + 2 * kP + i), a);
    b = _mm512_fmadd_ps(_mm512_loadu_ps(xc + 3 * kP + i), _mm512_loadu_ps(gc + 3 * kP + i), b);
    _mm512_store_ps(r + i, _mm512_add_ps(a, b));
  }
}
void pool_4_channels(const float* xc, float* r) {
  for (int i = 0; i < kP; i += 16) {
    __m512 a = _mm512_add_ps(_mm512_loadu_ps(xc + i), _mm512_loadu_ps(xc + kP + i));
    __m512 b = _mm512_add_ps(_mm512_loadu_ps(xc + 2 * kP + i), _mm512_loadu_ps(xc + 3 * kP + i));
    _mm512_store_ps(r + i, _mm512_add_ps(_mm512_load_ps(r + i), _mm512_add_ps(a, b)));
  }
}
void dx_channel(const float* gc, float* d) {  // d = g * s + gamma
  for (int i = 0; i < kP; i += 16)
    _mm512_stream_ps(d + i, _mm512_fmadd_ps(_mm512_loadu_ps(gc + i), _mm512_load_ps(s + i), _mm512_load_ps(gam + i)));
}
void scale_channel(const float* xc, float* o) {
  for (int i = 0; i < kP; i += 16)
    _mm512_stream_ps(o + i, _mm512_mul_ps(_mm512_loadu_ps(xc + i), _mm512_load_ps(s + i)));
}
void maps_from(float* r) {  // stands in for the conv and sigmoid: per pixel, cheap
  for (int i = 0; i < kP; ++i) gam[i] = r[i] * 1e-3f, s[i] = 0.5f + r[i] * 1e-6f, r[i] = 0;
}

void fwd() {
  for (int b = 0; b < kB; ++b) {
    const float* xb = x + b * kSample;
    for (int c = 0; c < kC; c += 4) pool_4_channels(xb + c * kP, acc[0]);
    maps_from(acc[0]);
    for (int c = 0; c < kC; ++c) scale_channel(xb + c * kP, out + b * kSample + c * kP);
  }
  _mm_sfence();
}
void bwd(bool prefetch) {
  for (int b = 0; b < kB; ++b) {
    const float *xb = x + b * kSample, *gb = g + b * kSample;
    for (int c = 0; c < kC; c += 4) rho_4_channels(xb + c * kP, gb + c * kP, acc[0]);
    maps_from(acc[0]);
    const char *xn = reinterpret_cast<const char*>(xb + kSample), *gn = reinterpret_cast<const char*>(gb + kSample);
    size_t issued = 0;
    for (int c = 0; c < kC; ++c) {
      dx_channel(gb + c * kP, out + b * kSample + c * kP);
      if (prefetch && b + 1 < kB)
        for (const size_t goal = kSample * 4 * (c + 1) / kC; issued < goal; issued += 64)
          _mm_prefetch(xn + issued, _MM_HINT_T1), _mm_prefetch(gn + issued, _MM_HINT_T1);
    }
  }
  _mm_sfence();
}
void bwd_interleaved() {
  for (int c = 0; c < kC; c += 4) rho_4_channels(x + c * kP, g + c * kP, acc[0]);
  for (int b = 0; b < kB; ++b) {
    maps_from(acc[b & 1]);
    const float *gb = g + b * kSample, *xn = x + (b + 1) * kSample, *gn = g + (b + 1) * kSample;
    for (int c = 0; c < kC; c += 4) {
      for (int k = 0; k < 4; ++k) dx_channel(gb + (c + k) * kP, out + b * kSample + (c + k) * kP);
      if (b + 1 < kB) rho_4_channels(xn + c * kP, gn + c * kP, acc[(b + 1) & 1]);
    }
  }
  _mm_sfence();
}
void copy() { std::memcpy(out, x, kB * kSample * 4); }
void add_xg() {
  for (size_t i = 0; i < kB * kSample; i += 16)
    _mm512_stream_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(g + i)));
  _mm_sfence();
}
}  // namespace

int main() {
  const size_t n = (kB + 1) * kSample;  // one sample more: the last prefetch stays in bounds
  x = static_cast<float*>(std::aligned_alloc(64, n * 4));
  g = static_cast<float*>(std::aligned_alloc(64, n * 4));
  out = static_cast<float*>(std::aligned_alloc(64, n * 4));
  std::fill(x, x + n, 1.f), std::fill(g, g + n, 1.f), std::fill(out, out + n, 0.f);
  BareLoopCase cases[] = {{"copy", copy},
                          {"add_xg", add_xg},
                          {"fwd", fwd},
                          {"bwd", [] { bwd(false); }},
                          {"bwd+pf", [] { bwd(true); }},
                          {"bwd interl", bwd_interleaved}};
  time_interleaved(cases, 8, 5);
  std::printf("(128,64,64,9) fp32, one thread, min of 40:");
  for (const auto& c : cases) std::printf("  %s %.3f ms (%.2fx copy)", c.name, c.best * 1e3, c.best / cases[0].best);
  std::printf("\n");
}
