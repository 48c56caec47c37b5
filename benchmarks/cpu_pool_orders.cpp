// The forward's pool pass in two read orders, as bare AVX-512 loops, from memory and from L3:
// pool_blocked's (blocks of 16 channels, each block's runs read a group of 4 vectors at a time:
// 16 interleaved runs) and one channel at a time, front to back (pool_in_order), each alone and
// followed by the scale pass (x again, out by non-temporal stores), and the in-order forward with
// the next sample prefetched during the scale pass, beside a copy and a sum.
// docs/cpu-results.md has the numbers and what they decided.
//
//   g++ -O3 -march=native -std=c++17 benchmarks/cpu_pool_orders.cpp -o /tmp/cpu_pool_orders
//   /tmp/cpu_pool_orders C P [memory|l3]   (needs AVX-512F; one thread; 128 samples of C runs of
//                                           P pixels, P a multiple of 16; min of 30 calls)
//
// memory: each call reads one of four copies of x in turn (4 x 128 samples: more than a 32 MiB
// L3), so x comes from DRAM; l3: the same x every call (L3-resident where 128 samples fit).
#include <immintrin.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bare_loop_timer.h"

namespace {
constexpr int kB = 128;
int C, P;
size_t sample;
float *x, *xs, *out;
alignas(64) float sa[8192], sb[8192], s[8192];

void pool_blocked(const float* xb) {  // sums of even channels to sa, odd to sb
  for (int c0 = 0; c0 < C; c0 += 16) {
    int i = 0;
    for (; i + 64 <= P; i += 64) {
      __m512 a[4], b[4];
      for (int v = 0; v < 4; ++v) a[v] = _mm512_load_ps(sa + i + 16 * v), b[v] = _mm512_load_ps(sb + i + 16 * v);
      const float* p = xb + size_t(c0) * P + i;
      for (int c = c0; c < std::min(C, c0 + 16); c += 2, p += 2 * P)
        for (int v = 0; v < 4; ++v)
          a[v] = _mm512_add_ps(a[v], _mm512_loadu_ps(p + 16 * v)),
          b[v] = _mm512_add_ps(b[v], _mm512_loadu_ps(p + P + 16 * v));
      for (int v = 0; v < 4; ++v) _mm512_store_ps(sa + i + 16 * v, a[v]), _mm512_store_ps(sb + i + 16 * v, b[v]);
    }
    for (; i < P; i += 16) {
      __m512 a = _mm512_load_ps(sa + i), b = _mm512_load_ps(sb + i);
      const float* p = xb + size_t(c0) * P + i;
      for (int c = c0; c < std::min(C, c0 + 16); c += 2, p += 2 * P)
        a = _mm512_add_ps(a, _mm512_loadu_ps(p)), b = _mm512_add_ps(b, _mm512_loadu_ps(p + P));
      _mm512_store_ps(sa + i, a), _mm512_store_ps(sb + i, b);
    }
  }
}
void pool_in_order(const float* xb) {
  for (int c = 0; c < C; ++c) {
    float* r = (c & 1) ? sb : sa;
    const float* p = xb + size_t(c) * P;
    for (int i = 0; i < P; i += 16)
      _mm512_store_ps(r + i, _mm512_add_ps(_mm512_load_ps(r + i), _mm512_loadu_ps(p + i)));
  }
}
void scale(const float* xb, float* ob) {
  for (size_t i = 0; i < sample; i += 16)
    _mm512_stream_ps(ob + i, _mm512_mul_ps(_mm512_loadu_ps(xb + i), _mm512_load_ps(s + i % P)));
}
template <void (*Pool)(const float*), bool kScale> void pass() {
  for (int b = 0; b < kB; ++b) {
    Pool(x + b * sample);
    for (int i = 0; i < P; ++i) s[i] = 0.5f + (sa[i] + sb[i]) * 1e-6f, sa[i] = sb[i] = 0;
    if (kScale) scale(x + b * sample, out + b * sample);
  }
  _mm_sfence();
}
// The forward in order, the next sample's lines prefetched (into L2) four at a time every four
// lines written, as the kernels' SpreadPrefetch does.
void fwd_prefetched() {
  for (int b = 0; b < kB; ++b) {
    pool_in_order(x + b * sample);
    for (int i = 0; i < P; ++i) s[i] = 0.5f + (sa[i] + sb[i]) * 1e-6f, sa[i] = sb[i] = 0;
    const float* xb = x + b * sample;
    float* ob = out + b * sample;
    const char* next = b + 1 < kB ? reinterpret_cast<const char*>(xb + sample) : nullptr;
    size_t line = 0;
    for (size_t i = 0; i < sample; i += 16, ++line) {
      if (next && line % 4 == 0)
        for (size_t q = line; q < line + 4 && q < sample / 16; ++q) _mm_prefetch(next + q * 64, _MM_HINT_T1);
      _mm512_stream_ps(ob + i, _mm512_mul_ps(_mm512_loadu_ps(xb + i), _mm512_load_ps(s + i % P)));
    }
  }
  _mm_sfence();
}
void copy() { std::memcpy(out, x, kB * sample * 4); }
void sum() {
  __m512 a = _mm512_setzero_ps();
  for (size_t i = 0; i < kB * sample; i += 16) a = _mm512_add_ps(a, _mm512_loadu_ps(x + i));
  s[0] = _mm512_reduce_add_ps(a);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || atoi(argv[2]) % 16 || atoi(argv[2]) > 8192)
    return std::fprintf(stderr, "usage: C P [memory|l3]\n"), 2;
  C = atoi(argv[1]), P = atoi(argv[2]), sample = size_t(C) * P;
  const bool from_memory = argc < 4 || std::strcmp(argv[3], "l3") != 0;
  const size_t n = kB * sample;
  xs = static_cast<float*>(std::aligned_alloc(64, 4 * n * 4));
  out = static_cast<float*>(std::aligned_alloc(64, n * 4));
  std::fill(xs, xs + 4 * n, 1.f), std::fill(out, out + n, 0.f);
  BareLoopCase cases[] = {{"copy", copy},
                          {"sum", sum},
                          {"pool blocked", pass<pool_blocked, false>},
                          {"pool in order", pass<pool_in_order, false>},
                          {"fwd blocked", pass<pool_blocked, true>},
                          {"fwd in order", pass<pool_in_order, true>},
                          {"fwd in order, prefetched", fwd_prefetched}};
  time_interleaved(cases, 6, 5, [&](int call) { x = xs + (from_memory ? call % 4 : 0) * n; });
  std::printf("C %d, P %d, x from %s, ms:", C, P, from_memory ? "memory" : "L3");
  for (const auto& c : cases) std::printf("  %s %.3f", c.name, c.best * 1e3);
  std::printf("\n");
}
