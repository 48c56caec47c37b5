// How many streams one core reads from memory at full rate: the backward's rho pass (sum over
// channels of g * x, per pixel) over B samples of [C, P] fp32 x and g, in several loop orders,
// beside a dot over the same bytes in memory order. docs/cpu-results.md has the numbers and what
// they decided (rho_in_order, csrc/cpu/kernels_f32_impl.h).
//
//   g++ -O3 -mavx512f -mavx512dq -mfma -std=c++17 benchmarks/cpu_read_streams.cpp -o /tmp/cpu_read_streams
//   /tmp/cpu_read_streams 64 576      (C, P: channels and pixels per channel run; min of 15 calls, ms)
//
// dot           x and g in memory order (two streams)
// groups outer  rho's groups: 4 vectors of pixels over runs of 16 channels, pixel groups outermost
// runs16 outer  the same with the runs of 16 channels outermost
// subK          K channels at a time over the whole run, the chains' sums in L1 between them
// sub1          one channel at a time (two streams: what rho_in_order does)
// dot4          a dot over two channels' runs of x and g at once (four streams), nothing stored
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <vector>
static int B = 128, C, P;
static float *X[2], *G[2];
alignas(64) static float sa[4096], sb[4096];
alignas(64) static double rho[4096];
static inline void fma4(__m512& a0, __m512& a1, __m512& a2, __m512& a3, const float* g, const float* x) {
  a0 = _mm512_fmadd_ps(_mm512_loadu_ps(g), _mm512_loadu_ps(x), a0);
  a1 = _mm512_fmadd_ps(_mm512_loadu_ps(g + 16), _mm512_loadu_ps(x + 16), a1);
  a2 = _mm512_fmadd_ps(_mm512_loadu_ps(g + 32), _mm512_loadu_ps(x + 32), a2);
  a3 = _mm512_fmadd_ps(_mm512_loadu_ps(g + 48), _mm512_loadu_ps(x + 48), a3);
}
static inline void add_d(double* r, __m512 v) {
  _mm512_storeu_pd(r, _mm512_add_pd(_mm512_loadu_pd(r), _mm512_cvtps_pd(_mm512_castps512_ps256(v))));
  _mm512_storeu_pd(r + 8, _mm512_add_pd(_mm512_loadu_pd(r + 8), _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1))));
}
// variant 0: pixel groups outer, runs of 16 channels inner (assumes P % 64 == 0 or handles only groups)
// variant 1: runs of 16 outer, groups inner; variant 2: sub-blocks of `sub` channels over the run, sums in L1
static void rho_sample(int variant, int sub, const float* g, const float* x) {
  const int ge = P / 64 * 64;
  for (int i = 0; i < P; ++i) rho[i] = 0;
  auto group = [&](int c0, int c1, int i) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int c = c0; c < c1; c += 2) {
      fma4(a0, a1, a2, a3, g + (size_t)c * P + i, x + (size_t)c * P + i);
      fma4(b0, b1, b2, b3, g + (size_t)(c + 1) * P + i, x + (size_t)(c + 1) * P + i);
    }
    add_d(rho + i, _mm512_add_ps(a0, b0)); add_d(rho + i + 16, _mm512_add_ps(a1, b1));
    add_d(rho + i + 32, _mm512_add_ps(a2, b2)); add_d(rho + i + 48, _mm512_add_ps(a3, b3));
  };
  if (variant == 0) {
    for (int i = 0; i < ge; i += 64) for (int c0 = 0; c0 < C; c0 += 16) group(c0, c0 + 16, i);
  } else if (variant == 1) {
    for (int c0 = 0; c0 < C; c0 += 16) for (int i = 0; i < ge; i += 64) group(c0, c0 + 16, i);
  } else if (variant == 3) {  // one channel per sweep: two streams, x and g in memory order
    for (int c0 = 0; c0 < C; c0 += 16)
      for (int c = c0; c < c0 + 16; ++c) {
        float* buf = (c - c0) & 1 ? sb : sa;
        const float* gc = g + (size_t)c * P; const float* xc = x + (size_t)c * P;
        const bool first = c - c0 < 2, last = c == c0 + 15;
        for (int i = 0; i < ge; i += 64) {
          __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
          if (!first) { a0 = _mm512_load_ps(buf + i); a1 = _mm512_load_ps(buf + i + 16); a2 = _mm512_load_ps(buf + i + 32); a3 = _mm512_load_ps(buf + i + 48); }
          fma4(a0, a1, a2, a3, gc + i, xc + i);
          if (last) {
            add_d(rho + i, _mm512_add_ps(_mm512_load_ps(sa + i), a0)); add_d(rho + i + 16, _mm512_add_ps(_mm512_load_ps(sa + i + 16), a1));
            add_d(rho + i + 32, _mm512_add_ps(_mm512_load_ps(sa + i + 32), a2)); add_d(rho + i + 48, _mm512_add_ps(_mm512_load_ps(sa + i + 48), a3));
          } else {
            _mm512_store_ps(buf + i, a0); _mm512_store_ps(buf + i + 16, a1); _mm512_store_ps(buf + i + 32, a2); _mm512_store_ps(buf + i + 48, a3);
          }
        }
      }
  } else if (variant == 4) {  // a dot in sub2's order: 4 streams, no stores
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int c = 0; c < C; c += 2)
      for (int i = 0; i < ge; i += 64) {
        fma4(a0, a1, a2, a3, g + (size_t)c * P + i, x + (size_t)c * P + i);
        fma4(b0, b1, b2, b3, g + (size_t)(c + 1) * P + i, x + (size_t)(c + 1) * P + i);
      }
    add_d(rho, _mm512_add_ps(_mm512_add_ps(a0, b0), _mm512_add_ps(_mm512_add_ps(a1, b1), _mm512_add_ps(a2, _mm512_add_ps(b2, _mm512_add_ps(a3, b3))))));
  } else {
    for (int c0 = 0; c0 < C; c0 += 16)
      for (int cs = c0; cs < c0 + 16; cs += sub) {
        const bool first = cs == c0, last = cs + sub == c0 + 16;
        for (int i = 0; i < ge; i += 64) {
          __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
          if (!first) {
            a0 = _mm512_load_ps(sa + i); a1 = _mm512_load_ps(sa + i + 16); a2 = _mm512_load_ps(sa + i + 32); a3 = _mm512_load_ps(sa + i + 48);
            b0 = _mm512_load_ps(sb + i); b1 = _mm512_load_ps(sb + i + 16); b2 = _mm512_load_ps(sb + i + 32); b3 = _mm512_load_ps(sb + i + 48);
          }
          for (int c = cs; c < cs + sub; c += 2) {
            fma4(a0, a1, a2, a3, g + (size_t)c * P + i, x + (size_t)c * P + i);
            fma4(b0, b1, b2, b3, g + (size_t)(c + 1) * P + i, x + (size_t)(c + 1) * P + i);
          }
          if (last) {
            add_d(rho + i, _mm512_add_ps(a0, b0)); add_d(rho + i + 16, _mm512_add_ps(a1, b1));
            add_d(rho + i + 32, _mm512_add_ps(a2, b2)); add_d(rho + i + 48, _mm512_add_ps(a3, b3));
          } else {
            _mm512_store_ps(sa + i, a0); _mm512_store_ps(sa + i + 16, a1); _mm512_store_ps(sa + i + 32, a2); _mm512_store_ps(sa + i + 48, a3);
            _mm512_store_ps(sb + i, b0); _mm512_store_ps(sb + i + 16, b1); _mm512_store_ps(sb + i + 32, b2); _mm512_store_ps(sb + i + 48, b3);
          }
        }
      }
  }
}
static double dot_sample(const float* g, const float* x) {
  __m512 a = _mm512_setzero_ps(), b = a, c2 = a, d = a;
  const size_t n = (size_t)C * P;
  for (size_t i = 0; i < n; i += 64) {
    a = _mm512_fmadd_ps(_mm512_loadu_ps(g + i), _mm512_loadu_ps(x + i), a);
    b = _mm512_fmadd_ps(_mm512_loadu_ps(g + i + 16), _mm512_loadu_ps(x + i + 16), b);
    c2 = _mm512_fmadd_ps(_mm512_loadu_ps(g + i + 32), _mm512_loadu_ps(x + i + 32), c2);
    d = _mm512_fmadd_ps(_mm512_loadu_ps(g + i + 48), _mm512_loadu_ps(x + i + 48), d);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c2, d)));
}
int main(int argc, char** argv) {
  C = atoi(argv[1]); P = atoi(argv[2]);
  const size_t n = (size_t)B * C * P;
  for (int s = 0; s < 2; ++s) {
    X[s] = (float*)aligned_alloc(4096, n * 4 + 4096); G[s] = (float*)aligned_alloc(4096, n * 4 + 4096);
    for (size_t i = 0; i < n; ++i) X[s][i] = 1e-3f * (i % 97), G[s][i] = 1e-3f * (i % 89);
  }
  struct V { const char* name; int variant, sub; };
  std::vector<V> vs = {{"dot", -1, 0}, {"groups outer", 0, 0}, {"runs16 outer", 1, 0}, {"sub8", 2, 8}, {"sub4", 2, 4}, {"sub2", 2, 2}, {"sub1", 3, 0}, {"dot4", 4, 0}};
  std::vector<double> best(vs.size(), 1e9);
  double sink = 0;
  for (int rep = 0; rep < 15; ++rep)
    for (size_t k = 0; k < vs.size(); ++k) {
      const int s = (rep + k) & 1;
      auto t0 = std::chrono::steady_clock::now();
      for (int b = 0; b < B; ++b) {
        const float* xb = X[s] + (size_t)b * C * P; const float* gb = G[s] + (size_t)b * C * P;
        if (vs[k].variant < 0) sink += dot_sample(gb, xb); else { rho_sample(vs[k].variant, vs[k].sub, gb, xb); sink += rho[3]; }
      }
      best[k] = std::min(best[k], std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  printf("C=%d P=%d:", C, P);
  for (size_t k = 0; k < vs.size(); ++k) printf("  %s %.3f", vs[k].name, best[k]);
  printf("  (%g)\n", sink > 0 ? 0.0 : 1.0);
}
