// The backward's two passes as bare AVX-512 loops, x and g from memory, with the next sample's
// lines prefetched (into L2, four lines every four read or written) in different passes: the
// rho pass (x.g per pixel, channel runs front to back, sums in an L1 row), then the dx pass
// (g * s + a from L2, non-temporal stores). Beside it, a streaming x + g (the 3N floor).
// docs/cpu-results.md has the numbers and what they decided.
//
//   g++ -O3 -march=native -std=c++17 benchmarks/cpu_bwd_prefetch.cpp -o /tmp/cpu_bwd_prefetch
//   /tmp/cpu_bwd_prefetch C P   (needs AVX-512F; one thread; 128 samples of C runs of P pixels,
//                                P a multiple of 16; four copies of x and g in turn; min of 30 calls)
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
float *xs, *gs, *x, *g, *out;
alignas(64) float r[8192], s[8192], a[8192];
inline void pf_group(const char* base, size_t& line, size_t lines, int count = 4) {
  for (int q = 0; q < count && line < lines; ++q, ++line) _mm_prefetch(base + line * 64, _MM_HINT_T1);
}
// mode bits: 1 = next x during dx, 2 = next g during dx, 4 = next x during rho, 8 = next g during rho,
// 16 = (with 8) g at half the rate in rho, the rest in dx
template <int kMode> void bwd() {
  const size_t lines = sample / 16;
  for (int b = 0; b < kB; ++b) {
    const float* xb = x + b * sample;
    const float* gb = g + b * sample;
    float* ob = out + b * sample;
    const char* nx = b + 1 < kB ? (const char*)(xb + sample) : nullptr;
    const char* ng = b + 1 < kB ? (const char*)(gb + sample) : nullptr;
    size_t lx = nx ? 0 : lines, lg = ng ? 0 : lines, done = 0;
    for (int i = 0; i < P; i += 16) _mm512_store_ps(r + i, _mm512_setzero_ps());
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < P; i += 16, ++done) {
        if (done % 4 == 0) {
          if (kMode & 4) pf_group(nx, lx, lines);
          if (kMode & 8) pf_group(ng, lg, lines, kMode & 16 ? 2 : 4);
        }
        _mm512_store_ps(r + i, _mm512_fmadd_ps(_mm512_loadu_ps(xb + c * P + i), _mm512_loadu_ps(gb + c * P + i),
                                               _mm512_load_ps(r + i)));
      }
    for (int i = 0; i < P; ++i) s[i] = 0.5f + r[i] * 1e-9f, a[i] = r[i] * 1e-9f;
    done = 0;
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < P; i += 16, ++done) {
        if (done % 4 == 0) {
          if (kMode & 1) pf_group(nx, lx, lines);
          if (kMode & 2) pf_group(ng, lg, lines);
        }
        _mm512_stream_ps(ob + c * P + i, _mm512_fmadd_ps(_mm512_loadu_ps(gb + c * P + i), _mm512_load_ps(s + i),
                                                         _mm512_load_ps(a + i)));
      }
  }
  _mm_sfence();
}
void add() {
  for (size_t i = 0; i < kB * sample; i += 16)
    _mm512_stream_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(g + i)));
  _mm_sfence();
}
}  // namespace
int main(int argc, char** argv) {
  if (argc < 3 || atoi(argv[2]) % 16 || atoi(argv[2]) > 8192) return std::fprintf(stderr, "usage: C P\n"), 2;
  C = atoi(argv[1]), P = atoi(argv[2]), sample = size_t(C) * P;
  const size_t n = kB * sample;
  xs = static_cast<float*>(std::aligned_alloc(64, 4 * n * 4));
  gs = static_cast<float*>(std::aligned_alloc(64, 4 * n * 4));
  out = static_cast<float*>(std::aligned_alloc(64, n * 4));
  std::fill(xs, xs + 4 * n, 1.f), std::fill(gs, gs + 4 * n, 1.f), std::fill(out, out + n, 0.f);
  BareLoopCase cases[] = {{"add", add},
                          {"none", bwd<0>},
                          {"x+g in dx", bwd<3>},
                          {"g in dx", bwd<2>},
                          {"x in rho, g in dx", bwd<6>},
                          {"g in rho, x in dx", bwd<9>},
                          {"x+g in rho", bwd<15>},
                          {"x+g/2 in rho, g/2 in dx", bwd<30>}};
  time_interleaved(cases, 6, 5, [&](int call) { x = xs + call % 4 * n, g = gs + call % 4 * n; });
  std::printf("C %d, P %d, ms:", C, P);
  for (const auto& c : cases) std::printf("  %s %.3f", c.name, c.best * 1e3);
  std::printf("\n");
}
