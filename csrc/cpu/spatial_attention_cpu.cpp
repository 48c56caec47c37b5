// Fused CPU kernels of the spatial-attention op (docs/design.md §2-3).
//
// Work item = a range of rows of one sample across all channels. An item streams down its
// rows in bands of R rows: it pools rows up to rh ahead of the band, convolves the band
// and scales it, so every row of x is pooled and then scaled while it is still in cache (x is
// read once from memory, out written once). Items are cut from the shape alone, never from
// the thread count, and the weight-gradient partials are summed in item order: the results
// are bitwise the same on any number of threads. The element loops of fp32, fp16 and bf16 (both
// layouts; and the conv of every float-accumulating dtype) run in kernels_f32.h, built per
// instruction set and chosen per call; fp64 keeps the portable templates here.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <limits>
#include <memory>
#include <optional>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../spatial_attention.h"
#include "half_convert.h"
#include "kernels_f32.h"
#include "output_cache.h"

namespace sam_fused {
namespace {

constexpr int64_t kMinItems = 64;            // items wanted for load balance
constexpr int64_t kMinItemElems = 16384;      // smallest item worth its halo rows
// Bytes of x per band: the rows kept in cache between the pass that reads them from memory
// and the pass that writes the output. A band of x (and of g in the backward) and the next
// band being prefetched share the core's L2 (the size the CPU reports, isa.h), with the L3
// behind it: half the L2 forward, a third backward (two arrays). Bands of a quarter and a
// sixth, which left room for the (streamed) output too, were 1.2-2x slower on a 512 KiB L2
// (docs/cpu-results.md): short strided runs cost per run, and the re-read misses little more.
// Clamped below so NCHW channel runs do not become short, partial-line segments.
int64_t band_bytes(bool backward) {
  const int64_t l2 = cpu::cache_sizes().l2;
  return std::clamp<int64_t>(l2 / (backward ? 3 : 2), 64 * 1024, 1024 * 1024);
}
constexpr int64_t kParallelElems = 32768;    // elements per task before splitting into threads

// Arrays larger than this are taken to come from memory, not a cache: outputs bypass the cache,
// and the pool and rho passes read long channel runs in memory order (kernels_f32.h from_memory).
constexpr int64_t kStreamBytes = 4 << 20;
bool from_memory(const at::Tensor& x) { return int64_t(x.nbytes()) > kStreamBytes; }

// Whether the element loops of kernels_f32.h cover storage S (in either layout; CL: channels_last):
// fp32, fp16 and bf16.
template <typename S, bool CL>
constexpr bool kIsaLoops = std::is_same_v<S, float> || std::is_same_v<S, c10::Half> || std::is_same_v<S, c10::BFloat16>;

// kIsaLoops, unless K's table leaves S out (null entries: fp16 on the default ISA of a CPU with
// F16C, which the portable loops convert faster; isa.cpp).
template <typename S, bool CL> bool runs_isa_loops(const cpu::F32Kernels& K) {
  if constexpr (!kIsaLoops<S, CL>) return false;
  else if constexpr (CL) return cpu::nhwc_kernels<S>(K).scale != nullptr;
  else return cpu::nchw_kernels<S>(K).scale != nullptr;
}

// f(std::true_type{}) or f(std::false_type{}): a runtime flag made a template argument.
template <typename F> inline void with_flag(bool on, F&& f) {
  if (on) f(std::true_type{});
  else f(std::false_type{});
}

// Elements [i, n) of a segment with plain stores. Which terms exist is a template argument, so
// each loop is branch-free and vectorises (for every T; fp32 also has the SSE2 loop below).
template <bool kBcast, bool kA, bool kAdd, bool kRoute, typename T, typename A>
inline void write_plain(T* o, const T* a, const A* s, const A* add, const int32_t* am, const A* route, int64_t c,
                        int64_t i, int64_t n) {
  for (; i < n; ++i) {
    const int64_t k = kBcast ? 0 : i;
    A v = kA ? to_acc<A>(a[i]) * s[k] : A(0);
    if constexpr (kAdd) v += add[k];
    if constexpr (kRoute) v += int64_t(am[k]) == (kBcast ? i : c) ? route[k] : A(0);
    o[i] = from_acc<T>(v);
  }
}

#if defined(SAM_FUSED_HAVE_F16C_PATH)
// write_plain for fp16, 8 elements at a time with F16C; the same operations in the same order.
template <bool kBcast, bool kA, bool kAdd, bool kRoute>
SAM_FUSED_F16C_TARGET void write_plain_f16c(c10::Half* o, const c10::Half* a, const float* s, const float* add,
                                            const int32_t* am, const float* route, int64_t c, int64_t i, int64_t n) {
  const __m256 s_b = _mm256_set1_ps(kBcast && kA ? s[0] : 0.f), add_b = _mm256_set1_ps(kBcast && kAdd ? add[0] : 0.f);
  const __m256 route_b = _mm256_set1_ps(kBcast && kRoute ? route[0] : 0.f);
  const __m256i key_b = _mm256_set1_epi32(kBcast ? (kRoute ? am[0] : 0) : int32_t(c));
  __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(int32_t(i)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (; i + 8 <= n; i += 8, idx = _mm256_add_epi32(idx, _mm256_set1_epi32(8))) {
    __m256 v = _mm256_setzero_ps();
    if constexpr (kA)
      v = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))),
                        kBcast ? s_b : _mm256_loadu_ps(s + i));
    if constexpr (kAdd) v = _mm256_add_ps(v, kBcast ? add_b : _mm256_loadu_ps(add + i));
    if constexpr (kRoute) {
      const __m256i hit =
          _mm256_cmpeq_epi32(kBcast ? idx : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(am + i)), key_b);
      v = _mm256_add_ps(v, _mm256_and_ps(_mm256_castsi256_ps(hit), kBcast ? route_b : _mm256_loadu_ps(route + i)));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  write_plain<kBcast, kA, kAdd, kRoute>(o, a, s, add, am, route, c, i, n);
}
#endif

// One output segment of n elements:
//   o[i] = a[i] * s(i) + add(i) + (am(i) == at(i) ? route(i) : 0)
// (the a-term is skipped when a is null, add when null, the routing when am is null).
// kBcast: s/add/route/am are single values and at(i) = i (a channels_last pixel, i runs over
// C); else they are arrays indexed by i and at(i) = c (an NCHW channel row, i over pixels).
// With `stream`, whole 64-byte lines are stored non-temporally: a large output is written once
// and not read back here, so its lines need not be fetched first (a plain store costs a read
// and a write of memory; streaming is what lets the fused op match x.clone()'s 2N bytes).
// Partial lines at the ends, which a neighbouring segment also writes, take plain stores.
template <bool kBcast, typename T, typename A>
inline void write_segment(T* o, const T* a, const A* s, const A* add, const int32_t* am, const A* route, int64_t c,
                          int64_t n, bool stream) {
  auto write_plain_range = [&](int64_t begin, int64_t end) {
    with_flag(a != nullptr, [&](auto kA) {
      with_flag(add != nullptr, [&](auto kAdd) {
        with_flag(am != nullptr, [&](auto kRoute) {
#if defined(SAM_FUSED_HAVE_F16C_PATH)
          if constexpr (std::is_same_v<T, c10::Half>)
            if (cpu_has_f16c())
              return write_plain_f16c<kBcast, kA.value, kAdd.value, kRoute.value>(o, a, s, add, am, route, c, begin,
                                                                                  end);
#endif
          write_plain<kBcast, kA.value, kAdd.value, kRoute.value>(o, a, s, add, am, route, c, begin, end);
        });
      });
    });
  };
  int64_t i = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, float>) {
    int64_t stream_end = 0;  // [line-aligned start, stream_end) is whole 64-byte lines
    if (stream && n >= 256) {  // >= 1 KB: short runs would be mostly partial lines
      const int64_t aligned = std::min<int64_t>(n, ((64 - (reinterpret_cast<uintptr_t>(o) & 63)) & 63) / sizeof(float));
      write_plain_range(0, aligned);
      i = aligned;
      stream_end = i + (n - i) / 16 * 16;
    }
    const __m128 s_b = kBcast ? _mm_set1_ps(s[0]) : _mm_setzero_ps();
    const __m128 add_b = (kBcast && add) ? _mm_set1_ps(add[0]) : _mm_setzero_ps();
    const __m128 route_b = (kBcast && am) ? _mm_set1_ps(route[0]) : _mm_setzero_ps();
    const __m128i key_b = _mm_set1_epi32(kBcast ? (am ? am[0] : 0) : int32_t(c));
    __m128i idx = _mm_setr_epi32(int32_t(i), int32_t(i + 1), int32_t(i + 2), int32_t(i + 3));
    const __m128i four = _mm_set1_epi32(4);
    for (; i + 4 <= n; i += 4, idx = _mm_add_epi32(idx, four)) {
      __m128 v = a ? _mm_mul_ps(_mm_loadu_ps(a + i), kBcast ? s_b : _mm_loadu_ps(s + i)) : _mm_setzero_ps();
      if (add) v = _mm_add_ps(v, kBcast ? add_b : _mm_loadu_ps(add + i));
      if (am) {
        const __m128i hit =
            _mm_cmpeq_epi32(kBcast ? idx : _mm_loadu_si128(reinterpret_cast<const __m128i*>(am + i)), key_b);
        v = _mm_add_ps(v, _mm_and_ps(_mm_castsi128_ps(hit), kBcast ? route_b : _mm_loadu_ps(route + i)));
      }
      if (i < stream_end) _mm_stream_ps(o + i, v);
      else _mm_storeu_ps(o + i, v);
    }
  }
#endif
  write_plain_range(i, n);
}

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();  // order the non-temporal stores before the op returns
#endif
}

struct RowSplit {
  int64_t chunks;      // row chunks per sample
  int64_t chunk_rows;  // rows per chunk (the last may be shorter)
  int64_t band_rows;  // rows per streaming band inside a chunk
  int64_t items(const Geometry& g) const { return g.B * chunks; }
};

RowSplit split_rows(const Geometry& g, int64_t elem_bytes, bool backward) {
  const int64_t row_elems = g.C * g.W, rh = g.kh / 2;
  int64_t chunks = std::min({ceil_div(kMinItems, g.B), std::max<int64_t>(1, row_elems * g.H / kMinItemElems),
                             std::max<int64_t>(1, g.H / std::max<int64_t>(4, 2 * rh + 1))});
  chunks = std::max<int64_t>(1, chunks);
  RowSplit s;
  s.chunk_rows = ceil_div(g.H, chunks);
  s.chunks = ceil_div(g.H, s.chunk_rows);
  const int64_t max_band =
      std::clamp<int64_t>(band_bytes(backward) / std::max<int64_t>(1, row_elems * elem_bytes), 1, s.chunk_rows);
  s.band_rows = ceil_div(s.chunk_rows, ceil_div(s.chunk_rows, max_band));  // equal bands, no 1-row tail
  return s;
}

// Indexing of x-shaped tensors of one sample: rows [ra, rb) are (rb-ra)*W pixels starting at
// pixel ra*W. NCHW: a channel's pixels are contiguous. NHWC: a pixel's channels are.
template <bool CL> struct Layout {
  int64_t C, H, W;
  int64_t at(int64_t c, int64_t pix) const { return CL ? pix * C + c : c * H * W + pix; }
};

// Sum and/or max over C for pixels [p0, p0+n) of one sample; qsum/qmax may be null.
template <bool CL, typename S, typename A>
void pool_pixels(const Layout<CL>& L, const S* x, int64_t p0, int64_t n, A* qsum, A* qmax) {
  const A ninf = -std::numeric_limits<A>::infinity();
  if constexpr (!CL) {
    if (qsum) std::fill(qsum, qsum + n, A(0));
    if (qmax) std::fill(qmax, qmax + n, ninf);
    for (int64_t c = 0; c < L.C; ++c) {
      const S* xc = x + L.at(c, p0);
      if (qsum)
        for (int64_t i = 0; i < n; ++i) qsum[i] += to_acc<A>(xc[i]);
      if (qmax)
        for (int64_t i = 0; i < n; ++i) qmax[i] = nan_max(qmax[i], to_acc<A>(xc[i]));
    }
  } else {
    constexpr int kLanes = 16;  // independent partials so the reduction over C vectorises
    for (int64_t i = 0; i < n; ++i) {
      const S* xp = x + L.at(0, p0 + i);
      A s[kLanes] = {}, m[kLanes];
      std::fill(m, m + kLanes, ninf);
      int64_t c = 0;
      for (; c + kLanes <= L.C; c += kLanes)
        for (int l = 0; l < kLanes; ++l) {
          const A v = to_acc<A>(xp[c + l]);
          s[l] += v;
          m[l] = nan_max(m[l], v);
        }
      for (; c < L.C; ++c) {
        const A v = to_acc<A>(xp[c]);
        s[0] += v;
        m[0] = nan_max(m[0], v);
      }
      A st = 0, mt = ninf;
      for (int l = 0; l < kLanes; ++l) {
        st += s[l];
        mt = nan_max(mt, m[l]);
      }
      if (qsum) qsum[i] = st;
      if (qmax) qmax[i] = mt;
    }
  }
  if (qsum)
    for (int64_t i = 0; i < n; ++i) qsum[i] /= A(L.C);
}

// rho = sum_c g*x for pixels [p0, p0+n) (skipped when rho is null), and the first argmax
// over C of x (skipped when amax is null). rho is summed in double (runs of 16 channels in
// A): sum_{b,h,w} of rho*s*(1-s) (the bias gradient) cancels heavily, so fp32 rounding of a
// 512-channel sum in each rho would show.
template <bool CL, typename S, typename A>
void rho_pixels(const Layout<CL>& L, const S* g, const S* x, int64_t p0, int64_t n, double* rho, A* mbuf,
                int32_t* amax) {
  const A ninf = -std::numeric_limits<A>::infinity();
  if constexpr (!CL) {
    constexpr int64_t kRun = 16;
    std::vector<A> run(rho ? n : 0, A(0));
    if (rho) std::fill(rho, rho + n, 0.0);
    if (amax) {
      std::fill(mbuf, mbuf + n, ninf);
      std::fill(amax, amax + n, int32_t(0));
    }
    for (int64_t c = 0; c < L.C; ++c) {
      const S* xc = x + L.at(c, p0);
      if (rho) {  // runs of kRun channels in A (vectorises 4 or 8 wide), their sums in double
        const S* gc = g + L.at(c, p0);
        for (int64_t i = 0; i < n; ++i) run[i] += to_acc<A>(gc[i]) * to_acc<A>(xc[i]);
        if ((c + 1) % kRun == 0 || c + 1 == L.C)
          for (int64_t i = 0; i < n; ++i) {
            rho[i] += double(run[i]);
            run[i] = A(0);
          }
      }
      if (amax)
        for (int64_t i = 0; i < n; ++i) argmax_update(to_acc<A>(xc[i]), c, mbuf[i], amax[i]);
    }
  } else {
    constexpr int kLanes = 16;
    for (int64_t i = 0; i < n; ++i) {
      const S* xp = x + L.at(0, p0 + i);
      if (rho) {
        const S* gp = g + L.at(0, p0 + i);
        double s[kLanes] = {};
        int64_t c = 0;
        for (; c + kLanes <= L.C; c += kLanes)
          for (int l = 0; l < kLanes; ++l) s[l] += to_acc<double>(gp[c + l]) * to_acc<double>(xp[c + l]);
        for (; c < L.C; ++c) s[0] += to_acc<double>(gp[c]) * to_acc<double>(xp[c]);
        double st = 0;
        for (int l = 0; l < kLanes; ++l) st += s[l];
        rho[i] = st;
      }
      if (amax) {
        A m = ninf;
        int32_t idx = 0;
        for (int64_t c = 0; c < L.C; ++c) argmax_update(to_acc<A>(xp[c]), c, m, idx);
        amax[i] = idx;
      }
    }
  }
}

// The rows of x (and g) that the next streaming step of this thread will read, prefetched into
// L2 a little at a time while the current band is written. One core cannot keep DRAM reads
// and writes in flight together on its own (measured here: pooling x alone takes as long as
// x.clone()), so without this the read pass and the write pass of each band would add up.
struct Prefetcher {
  const char* base = nullptr;  // the region: nseg segments of seg_bytes, stride apart
  int64_t seg_bytes = 0, stride = 0, nseg = 0, issued = 0;

  template <bool CL, typename S>
  static Prefetcher rows(const Layout<CL>& L, const S* sample, int64_t r0, int64_t r1) {
    Prefetcher p;
    if (!sample || r1 <= r0) return p;
    const int64_t e = sizeof(S);
    p.base = reinterpret_cast<const char*>(sample + L.at(0, r0 * L.W));
    p.seg_bytes = (r1 - r0) * L.W * e * (CL ? L.C : 1);
    p.stride = L.H * L.W * e;
    p.nseg = CL ? 1 : L.C;
    return p;
  }
  // The region as one run per channel (NCHW), for the fp32 kernels of kernels_f32.h.
  cpu::PrefetchRuns runs() const { return {base, seg_bytes, stride}; }
  // Issue prefetches up to `fraction` (done / total) of the region.
  void advance(int64_t done, int64_t total) {
#if defined(__SSE2__)
    const int64_t goal = total > 0 ? seg_bytes * nseg * std::min(done, total) / total : 0;
    for (; issued < goal; issued += 64)
      _mm_prefetch(base + issued / seg_bytes * stride + issued % seg_bytes, _MM_HINT_T1);
#endif
  }
};

// Rows [r0, r1) of the sample that the step after band [hb, he) of this item will read: the
// next band of this item, or the first band of the next item when this thread runs it too.
struct NextRows {
  int64_t b, r0, r1;
};
inline NextRows next_rows(const Geometry& g, const RowSplit& sp, int64_t item, int64_t he, int64_t h1,
                          bool next_item_here) {
  const int64_t rh = g.kh / 2;
  if (he < h1) return {item / sp.chunks, std::min(he + rh, g.H), std::min(he + sp.band_rows + rh, g.H)};
  if (!next_item_here) return {0, 0, 0};
  const int64_t n = item + 1, h0 = (n % sp.chunks) * sp.chunk_rows;
  return {n / sp.chunks, std::max<int64_t>(h0 - rh, 0), std::min(h0 + sp.band_rows + rh, g.H)};
}

template <typename A> struct Params {
  std::vector<A> w;  // [P, kh, kw]
  A bias;
};

template <typename scalar_t> Params<acc_t<scalar_t>> load_params(const at::Tensor& weight,
                                                                 const std::optional<at::Tensor>& bias) {
  using A = acc_t<scalar_t>;
  const at::Tensor wc = weight.contiguous();
  const scalar_t* wp = wc.const_data_ptr<scalar_t>();
  Params<A> p{std::vector<A>(wp, wp + wc.numel()), A(0)};
  if (bias) p.bias = A(bias->const_data_ptr<scalar_t>()[0]);
  return p;
}

// Scratch buffers of one work item: n values of T in slot `slot` of this thread's scratch, kept
// between the items a thread runs (allocating an item's dozen small buffers anew cost more
// instructions than the element loops of a cache-resident band); filled with `fill` when given,
// else left as the last item wrote them. An item uses each slot for one buffer.
constexpr int kScratchSlots = 9;
template <typename T> struct Scratch {
  T* ptr;
  int64_t n;
  Scratch(int slot, int64_t n_, std::optional<T> fill = std::nullopt) : n(n_) {
    thread_local std::array<std::vector<double>, kScratchSlots> slots;  // double: aligned for every T here
    std::vector<double>& buf = slots[slot];
    const size_t words = (size_t(n) * sizeof(T) + sizeof(double) - 1) / sizeof(double);
    if (buf.size() < words) buf.resize(words);
    ptr = reinterpret_cast<T*>(buf.data());
    if (fill) std::fill(ptr, ptr + n, *fill);
  }
  T* data() { return ptr; }
  const T* data() const { return ptr; }
  T* begin() { return ptr; }
  T* end() { return ptr + n; }
  T& operator[](int64_t i) { return ptr[i]; }
  const T& operator[](int64_t i) const { return ptr[i]; }
};

// Rows [first, first + rows) of P maps, each row padded by `pad` zero columns on both sides,
// so the small convolutions below run over whole rows without bounds checks.
template <typename A> struct PaddedRows {
  int64_t first, rows, W, pad;
  Scratch<A> data;
  PaddedRows(int slot, int64_t P, int64_t first_, int64_t rows_, int64_t W_, int64_t pad_)
      : first(first_), rows(rows_), W(W_), pad(pad_), data(slot, P * rows_ * (W_ + 2 * pad_), A(0)) {}
  A* at(int64_t p, int64_t h) { return data.data() + (p * rows + h - first) * (W + 2 * pad) + pad; }  // column 0
  const A* at(int64_t p, int64_t h) const { return const_cast<PaddedRows*>(this)->at(p, h); }
  // Rows [ha, hz) of map p from / to rows of W back to back at src / dst: one copy where the
  // rows are unpadded (a kh x 1 kernel; a call per row of 9 showed in profiles).
  void put_rows(int64_t p, int64_t ha, int64_t hz, const A* src) {
    if (pad == 0) return void(std::copy(src, src + std::max<int64_t>(hz - ha, 0) * W, at(p, ha)));
    for (int64_t h = ha; h < hz; ++h, src += W) std::copy(src, src + W, at(p, h));
  }
  void get_rows(int64_t p, int64_t ha, int64_t hz, A* dst) const {
    if (pad == 0) return void(std::copy(at(p, ha), at(p, ha) + std::max<int64_t>(hz - ha, 0) * W, dst));
    for (int64_t h = ha; h < hz; ++h, dst += W) std::copy(at(p, h), at(p, h) + W, dst);
  }
};

// s[(h - ha) * W + w] = sigmoid(bias + sum_{p,i,j} w[p,i,j] q_p[h+i-rh, w+j-rw]) for rows
// [ha, hb); q holds the rows [ha - rh, hb + rh) (zero outside the map). In float (every dtype
// but fp64) by the ISA kernels (the taps summed in double); in fp64 below, vectorised over w, in
// the summation order of sam_fused::conv_pixel.
template <typename A>
void conv_sigmoid_rows(const Params<A>& prm, int64_t P, int64_t kh, int64_t kw, const PaddedRows<A>& q, int64_t ha,
                       int64_t hb, A* s, const cpu::F32Kernels* K, A* e = nullptr) {
  const int64_t W = q.W, rh = kh / 2, rw = kw / 2;
  if constexpr (std::is_same_v<A, float>) {
    const int64_t row = W + 2 * q.pad;
    return K->conv_sigmoid(prm.w.data(), prm.bias, P, kh, kw, q.at(0, ha - rh) - rw, q.rows * row, row, hb - ha, W, s,
                           e);
  }
  for (int64_t h = ha; h < hb; ++h) {
    A* sr = s + (h - ha) * W;
    std::fill(sr, sr + W, prm.bias);
    for (int64_t p = 0; p < P; ++p)
      for (int64_t i = 0; i < kh; ++i)
        for (int64_t j = 0; j < kw; ++j) {
          const A wt = prm.w[(p * kh + i) * kw + j];
          const A* qr = q.at(p, h + i - rh) + j - rw;
          for (int64_t w = 0; w < W; ++w) sr[w] += wt * qr[w];
        }
    for (int64_t w = 0; w < W; ++w) sr[w] = sigmoid(sr[w]);
  }
}

// Mean and/or max over C of rows [ha, hz) of one sample, into those rows of q; tmp: scratch
// for 2 * (hz - ha) * W values, each written before it is read.
template <typename scalar_t, bool CL>
void pool_rows_into(const Geometry& g, const Layout<CL>& L, const scalar_t* xb, int64_t ha, int64_t hz,
                    PaddedRows<acc_t<scalar_t>>& q, acc_t<scalar_t>* tmp, bool from_memory, const cpu::F32Kernels* K) {
  using A = acc_t<scalar_t>;
  const int64_t H = g.H, W = g.W, m = (hz - ha) * W;
  const int mean_slot = g.pool.mean_slot(), max_slot = g.pool.max_slot();
  A* sum = tmp;
  A* mx = tmp + m;
  bool pooled = false;
  if constexpr (kIsaLoops<scalar_t, CL>)
    if (runs_isa_loops<scalar_t, CL>(*K)) {  // the ISA kernels; the mean's division as in pool_pixels
      pooled = true;
      const scalar_t* xr = xb + L.at(0, ha * W);
      if (mean_slot >= 0) {
        if constexpr (CL) cpu::nhwc_kernels<scalar_t>(*K).pool_sum(xr, g.C, m, sum);
        else cpu::nchw_kernels<scalar_t>(*K).pool_sum(xr, g.C, H * W, m, sum, from_memory);
        for (int64_t i = 0; i < m; ++i) sum[i] /= A(g.C);
      }
      if (max_slot >= 0) {
        if constexpr (CL) cpu::nhwc_kernels<scalar_t>(*K).pool_max(xr, g.C, m, mx);
        else cpu::nchw_kernels<scalar_t>(*K).pool_max(xr, g.C, H * W, m, mx, from_memory);
      }
    }
  if (!pooled) pool_pixels(L, xb, ha * W, m, mean_slot >= 0 ? sum : nullptr, max_slot >= 0 ? mx : nullptr);
  if (mean_slot >= 0) q.put_rows(mean_slot, ha, hz, sum);
  if (max_slot >= 0) q.put_rows(max_slot, ha, hz, mx);
}

// out = x * s on the n pixels of one sample from pixel p0 (s: those pixels), advancing the
// prefetch pf of the next band's x as it goes.
template <typename scalar_t, bool CL>
void scale_pixels(const Geometry& g, const Layout<CL>& L, const scalar_t* xb, scalar_t* ob, const acc_t<scalar_t>* s,
                  int64_t p0, int64_t n, bool stream, Prefetcher& pf, const cpu::F32Kernels* K) {
  using A = acc_t<scalar_t>;
  if constexpr (kIsaLoops<scalar_t, CL>)
    if (runs_isa_loops<scalar_t, CL>(*K)) {
      const cpu::PrefetchRuns runs = pf.runs();
      if constexpr (CL)
        cpu::nhwc_kernels<scalar_t>(*K).scale(ob + L.at(0, p0), xb + L.at(0, p0), s, g.C, n, stream, &runs, 1);
      else cpu::nchw_kernels<scalar_t>(*K).scale(ob + p0, xb + p0, s, g.C, g.H * g.W, n, stream, &runs, 1);
      return;
    }
  if constexpr (!CL) {
    for (int64_t c = 0; c < g.C; ++c) {
      pf.advance(c + 1, g.C);
      write_segment<false, scalar_t, A>(ob + L.at(c, p0), xb + L.at(c, p0), s, nullptr, nullptr, nullptr, c, n, stream);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      pf.advance(i + 1, n);
      write_segment<true, scalar_t, A>(ob + L.at(0, p0 + i), xb + L.at(0, p0 + i), &s[i], nullptr, nullptr, nullptr, 0,
                                       g.C, stream);
    }
  }
}

// One item of the forward. Per band of rows: pool the rows up to rh past it (each row once),
// convolve and apply the sigmoid, save the pooled maps, then out = x * s (or s itself with
// return_map). K: the fp32 loops of the ISA in use (kernels_f32.h); other dtypes take the
// portable templates above. from_memory: x is (kStreamBytes), and out is streamed.
template <typename scalar_t, bool CL>
void forward_item(const Geometry& g, const RowSplit& sp, int64_t item, const scalar_t* x, scalar_t* out,
                  acc_t<scalar_t>* pooled, const Params<acc_t<scalar_t>>& prm, bool return_map, bool from_memory,
                  bool next_item_here, const cpu::F32Kernels* K) {
  using A = acc_t<scalar_t>;
  const bool stream = from_memory && !return_map;
  const int64_t H = g.H, W = g.W, P = g.pool.P, rh = g.kh / 2;
  const int64_t b = item / sp.chunks, h0 = (item % sp.chunks) * sp.chunk_rows, h1 = std::min(h0 + sp.chunk_rows, H);
  const Layout<CL> L{g.C, H, W};
  const scalar_t* xb = x + b * g.C * H * W;
  PaddedRows<A> q(0, P, h0 - rh, h1 - h0 + 2 * rh, W, g.kw / 2);  // rows outside the map stay 0
  // Scratch rows, each written before it is read (no zero fill).
  Scratch<A> pool_tmp(1, 2 * (sp.band_rows + 2 * rh) * W), s(2, sp.band_rows * W);

  int64_t pooled_to = std::max<int64_t>(h0 - rh, 0);
  for (int64_t hb = h0; hb < h1; hb += sp.band_rows) {
    const int64_t he = std::min(hb + sp.band_rows, h1), need = std::min(he + rh, H), n = (he - hb) * W;
    if (need > pooled_to) {
      pool_rows_into(g, L, xb, pooled_to, need, q, pool_tmp.data(), from_memory, K);
      pooled_to = need;
    }
    conv_sigmoid_rows(prm, P, g.kh, g.kw, q, hb, he, s.data(), K);
    for (int64_t p = 0; p < P; ++p) q.get_rows(p, hb, he, pooled + ((b * P + p) * H + hb) * W);
    if (return_map) {
      std::transform(s.data(), s.data() + n, out + (b * H + hb) * W, [](A v) { return from_acc<scalar_t>(v); });
      continue;
    }
    const NextRows nx = next_rows(g, sp, item, he, h1, next_item_here);
    Prefetcher pf = Prefetcher::rows(L, nx.r1 > nx.r0 ? x + nx.b * g.C * H * W : nullptr, nx.r0, nx.r1);
    scale_pixels(g, L, xb, out + b * g.C * H * W, s.data(), hb * W, n, stream, pf, K);
  }
  if (stream) stream_fence();
}

// One item of the backward: rows [h0, h1) of sample b, streamed in bands of sp.band_rows
// rows. Holds what outlives one band: the pooled rows it reads, and rho/delta, s and the
// argmax of its rows plus halo, each computed once (rows [h0-rh, h1+rh), zero outside the map).
template <typename scalar_t, bool CL> struct BackwardItem {
  using A = acc_t<scalar_t>;
  static constexpr bool kIsa = kIsaLoops<scalar_t, CL>;

  const Params<A>& prm;
  const cpu::F32Kernels* K;
  const bool isa_loops;  // runs_isa_loops
  const bool return_map;
  const int64_t C, H, W, P, kh, kw, rh, rw;
  const int64_t b, h0, h1, base, buf_rows;  // base: first row of delta, s and amax (h0 - rh)
  const int mean_slot, max_slot;
  const Layout<CL> L;
  const scalar_t* xb;  // this sample of x, grad_out, dx
  const scalar_t* gb;
  scalar_t* dxb;
  PaddedRows<A> q, delta;  // pooled rows [h0-2rh, h1+2rh) (s is needed on rows [h0-rh, h1+rh))
  Scratch<A> s, mbuf;
  Scratch<int32_t> amax;
  Scratch<A> gmean, gmax;  // gamma of the current band
  Scratch<double> rho;     // rho of the rows being added
  Scratch<float> e;        // exp(-a) of those rows (float accumulation only)

  BackwardItem(const Geometry& g, const RowSplit& sp, int64_t item, const scalar_t* gout, const scalar_t* x,
               const A* pooled, scalar_t* dx, const Params<A>& prm_, bool return_map_, const cpu::F32Kernels* K_)
      : prm(prm_),
        K(K_),
        isa_loops(runs_isa_loops<scalar_t, CL>(*K_)),
        return_map(return_map_),
        C(g.C),
        H(g.H),
        W(g.W),
        P(g.pool.P),
        kh(g.kh),
        kw(g.kw),
        rh(kh / 2),
        rw(kw / 2),
        b(item / sp.chunks),
        h0((item % sp.chunks) * sp.chunk_rows),
        h1(std::min(h0 + sp.chunk_rows, H)),
        base(h0 - rh),
        buf_rows(h1 - h0 + 2 * rh),
        mean_slot(g.pool.mean_slot()),
        max_slot(g.pool.max_slot()),
        L{C, H, W},
        xb(x + b * C * H * W),
        gb(gout + (return_map ? b * H * W : b * C * H * W)),
        dxb(dx + b * C * H * W),
        q(0, P, h0 - 2 * rh, h1 - h0 + 4 * rh, W, rw),
        delta(1, 1, base, buf_rows, W, rw),
        s(2, buf_rows * W, A(0)),
        mbuf(3, max_slot >= 0 ? buf_rows * W : 0),
        amax(4, max_slot >= 0 ? buf_rows * W : 0),
        gmean(5, sp.band_rows * W, A(0)),
        gmax(6, sp.band_rows * W, A(0)),
        rho(7, (sp.band_rows + 2 * rh) * W),
        e(8, std::is_same_v<A, float> ? (sp.band_rows + 2 * rh) * W : 0) {
    const int64_t qa = std::max<int64_t>(q.first, 0), qz = std::min(q.first + q.rows, H);
    for (int64_t p = 0; p < P; ++p) q.put_rows(p, qa, qz, pooled + ((b * P + p) * H + qa) * W);
  }

  int64_t row(int64_t h) const { return (h - base) * W; }

  // rho, s, delta = rho * s * (1 - s) (and the argmax) of rows [ha, hz): rho and the argmax by
  // the ISA kernels where they apply, else by rho_pixels; with return_map rho is the map's
  // gradient. The NCHW ISA rho also fetches `next` (the next rho step's x) as it reads: returns
  // whether it did. from_memory: x and g are (kStreamBytes).
  bool rho_s_delta_rows(int64_t ha, int64_t hz, bool from_memory, const cpu::PrefetchRuns& next) {
    bool fetched = false;
    const int64_t r0 = row(ha), m = (hz - ha) * W;
    if (return_map) std::transform(gb + ha * W, gb + hz * W, rho.data(), [](scalar_t v) { return to_acc<double>(v); });
    bool rho_done = return_map, argmax_done = max_slot < 0;
    if constexpr (kIsa)
      if (isa_loops) {
        const int64_t at = L.at(0, ha * W);
        if (!return_map) {
          if constexpr (CL) cpu::nhwc_kernels<scalar_t>(*K).rho(gb + at, xb + at, C, m, rho.data());
          else {
            cpu::nchw_kernels<scalar_t>(*K).rho(gb + at, xb + at, C, H * W, m, rho.data(), from_memory, &next, 1);
            fetched = true;
          }
          rho_done = true;
        }
        if (!argmax_done) {
          if constexpr (CL) cpu::nhwc_kernels<scalar_t>(*K).argmax(xb + at, C, m, amax.data() + r0);
          else cpu::nchw_kernels<scalar_t>(*K).argmax(xb + at, C, H * W, m, amax.data() + r0);
          argmax_done = true;
        }
      }
    if (!rho_done || !argmax_done)
      rho_pixels(L, gb, xb, ha * W, m, rho_done ? nullptr : rho.data(), argmax_done ? nullptr : mbuf.data() + r0,
                 argmax_done ? nullptr : amax.data() + r0);
    if constexpr (std::is_same_v<A, float>) {
      // s(1 - s) = e / (1 + e)^2 from e = exp(-a): the float s near 1 has an absolute rounding
      // error (eps/2) that 1 - s would keep, which summed over the pixels showed in the bias
      // gradient; e carries only a relative one.
      conv_sigmoid_rows(prm, P, kh, kw, q, ha, hz, s.data() + r0, K, e.data());
      // e / (1 + e)^2 as 1 / ((1 + e)(1 + 1/e)): 0 at e = inf (s = 0) and at e = 0 (s = 1), where
      // the quotient gave inf / inf at e = inf. No test: with one (a min, or a select), GCC made
      // the loop below a scalar one with a branch (2.5x its instructions per pixel).
      auto delta_of = [](double r, double ew) { return A(r * (1.0 / ((1.0 + ew) * (1.0 + 1.0 / ew)))); };
      if (rw == 0) {  // unpadded rows (a kh x 1 kernel): one run, which the compiler vectorises
        A* __restrict d = delta.at(0, ha);
        const float* __restrict ep = e.data();
        const double* __restrict rp = rho.data();
        for (int64_t i = 0; i < m; ++i) d[i] = delta_of(rp[i], ep[i]);
      } else {
        for (int64_t h = ha; h < hz; ++h)
          for (int64_t w = 0; w < W; ++w) delta.at(0, h)[w] = delta_of(rho[(h - ha) * W + w], e[(h - ha) * W + w]);
      }
    } else {
      conv_sigmoid_rows(prm, P, kh, kw, q, ha, hz, s.data() + r0, K);
      for (int64_t h = ha; h < hz; ++h)
        for (int64_t w = 0; w < W; ++w)
          delta.at(0, h)[w] = A(sigmoid_backward(rho[(h - ha) * W + w], double(s[row(h) + w])));
    }
    return fetched;
  }

  // gamma_p = transposed conv of delta with w[p] on rows [hb, he) (gamma_mean divided by C),
  // and the weight/bias gradient of those rows added to `partial`.
  void gamma_and_weight_grad(int64_t hb, int64_t he, double* partial) {
    if constexpr (std::is_same_v<A, float>) {  // the ISA kernels (every dtype but fp64)
      float* const gamma[2] = {mean_slot == 0 ? gmean.data() : gmax.data(),
                               mean_slot == 1 ? gmean.data() : gmax.data()};
      const int64_t padded = W + 2 * rw;  // row length of q and delta
      K->conv_backward(prm.w.data(), P, kh, kw, delta.at(0, hb), padded, q.at(0, hb), q.rows * padded, padded, he - hb,
                       W, gamma, partial);
    } else {
      const int64_t nw = P * kh * kw;
      std::fill(gmean.begin(), gmean.end(), A(0));
      std::fill(gmax.begin(), gmax.end(), A(0));
      for (int64_t h = hb; h < he; ++h) {
        const A* dr = delta.at(0, h);
        for (int64_t p = 0; p < P; ++p) {
          A* gr = (p == mean_slot ? gmean.data() : gmax.data()) + (h - hb) * W;
          for (int64_t i = 0; i < kh; ++i)
            for (int64_t j = 0; j < kw; ++j) {
              const A wt = prm.w[(p * kh + i) * kw + j];
              const A* dsrc = delta.at(0, h - i + rh) + rw - j;  // delta[h-i+rh, w-j+rw]
              for (int64_t w = 0; w < W; ++w) gr[w] += wt * dsrc[w];
              const A* qr = q.at(p, h + i - rh) + j - rw;  // q_p[h+i-rh, w+j-rw]
              double acc = 0;
              for (int64_t w = 0; w < W; ++w) acc += double(dr[w]) * double(qr[w]);
              partial[(p * kh + i) * kw + j] += acc;
            }
        }
        double acc = 0;
        for (int64_t w = 0; w < W; ++w) acc += double(dr[w]);
        partial[nw] += acc;
      }
    }
    if (mean_slot >= 0)
      for (int64_t i = 0; i < (he - hb) * W; ++i) gmean[i] /= A(C);
  }

  // dx = g*s (unless return_map) + gamma_mean/C + gamma_max at the first argmax channel on rows
  // [hb, he), advancing the prefetch of the next rho step's x and g as it goes.
  void write_dx_band(int64_t hb, int64_t he, Prefetcher& pfx, Prefetcher& pfg, bool stream) {
    const int64_t n = (he - hb) * W;
    const A* sb = s.data() + row(hb);
    const int32_t* am = max_slot >= 0 ? amax.data() + row(hb) : nullptr;
    const A* gm = mean_slot >= 0 ? gmean.data() : nullptr;
    if constexpr (kIsa)
      if (isa_loops) {
        const cpu::PrefetchRuns runs[2] = {pfx.runs(), pfg.runs()};
        const int64_t at = L.at(0, hb * W);
        const scalar_t* g_band = return_map ? nullptr : gb + at;
        if constexpr (CL)
          cpu::nhwc_kernels<scalar_t>(*K).dx(dxb + at, g_band, sb, gm, am, gmax.data(), C, n, stream, runs, 2);
        else
          cpu::nchw_kernels<scalar_t>(*K).dx(dxb + at, g_band, sb, gm, am, gmax.data(), C, H * W, n, stream, runs, 2);
        return;
      }
    if constexpr (!CL) {
      for (int64_t c = 0; c < C; ++c) {
        pfx.advance(c + 1, C);
        pfg.advance(c + 1, C);
        write_segment<false, scalar_t, A>(dxb + L.at(c, hb * W), return_map ? nullptr : gb + L.at(c, hb * W), sb, gm,
                                          am, gmax.data(), c, n, stream);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        pfx.advance(i + 1, n);
        pfg.advance(i + 1, n);
        write_segment<true, scalar_t, A>(dxb + L.at(0, hb * W + i), return_map ? nullptr : gb + L.at(0, hb * W + i),
                                         sb + i, gm ? gm + i : nullptr, am ? am + i : nullptr, gmax.data() + i, 0, C,
                                         stream);
      }
    }
  }
};

// One item of the backward; adds its weight/bias gradient to `partial` ([P*kh*kw + 1], bias
// last), which belongs to this item alone. Per band of rows: rho, s and delta of the rows up
// to rh past it (each row once), then gamma and the weight gradient, then dx.
template <typename scalar_t, bool CL>
void backward_item(const Geometry& g, const RowSplit& sp, int64_t item, const scalar_t* gout, const scalar_t* x,
                   const acc_t<scalar_t>* pooled, scalar_t* dx, const Params<acc_t<scalar_t>>& prm, bool return_map,
                   bool stream, bool next_item_here, double* partial, const cpu::F32Kernels* K) {
  BackwardItem<scalar_t, CL> state(g, sp, item, gout, x, pooled, dx, prm, return_map, K);
  const Layout<CL>& L = state.L;
  const int64_t sample = g.C * g.H * g.W, rh = state.rh, h1 = state.h1;
  int64_t done_to = std::max<int64_t>(state.base, 0);
  for (int64_t hb = state.h0; hb < h1; hb += sp.band_rows) {
    const int64_t he = std::min(hb + sp.band_rows, h1), need = std::min(he + rh, g.H);
    // The next rho step reads x (when it needs rho or argmax) and g (unless return_map): its x is
    // fetched during this step's rho pass where the ISA rho runs, its g during the dx pass, so
    // the reads from memory are split between the two passes.
    const NextRows nx = next_rows(g, sp, item, he, h1, next_item_here);
    const bool reads_x = !return_map || state.max_slot >= 0;
    Prefetcher pfx = Prefetcher::rows(L, nx.r1 > nx.r0 && reads_x ? x + nx.b * sample : nullptr, nx.r0, nx.r1);
    Prefetcher pfg = Prefetcher::rows(L, nx.r1 > nx.r0 && !return_map ? gout + nx.b * sample : nullptr, nx.r0, nx.r1);
    Prefetcher none;
    bool x_fetched = false;
    if (need > done_to) {
      // (cached outputs, whose inputs are in cache too, fetch nothing: the calls cost more there)
      x_fetched = state.rho_s_delta_rows(done_to, need, stream, stream ? pfx.runs() : cpu::PrefetchRuns{});
      done_to = need;
    }
    state.gamma_and_weight_grad(hb, he, partial);
    state.write_dx_band(hb, he, x_fetched ? none : pfx, pfg, stream);
  }
  if (stream) stream_fence();
}

// f(item, next_item_here): items run in order within a thread's range, so an item knows
// whether the next one is its thread's too (and worth prefetching for).
template <typename F> void for_each_item(const Geometry& g, const RowSplit& sp, F&& f) {
  const int64_t item_elems = std::max<int64_t>(1, sp.chunk_rows * g.C * g.W);
  at::parallel_for(0, sp.items(g), std::max<int64_t>(1, kParallelElems / item_elems), [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) f(it, it + 1 < end);
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> spatial_attention_fwd_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                             const std::optional<at::Tensor>& bias,
                                                             const std::string& pool, bool return_map) {
  const Geometry g = check_inputs(x, weight, bias, pool);
  const auto fmt = compute_format(x);
  const at::Tensor xc = x.contiguous(fmt);
  at::Tensor pooled = at::empty({g.B, g.pool.P, g.H, g.W}, x.options().dtype(acc_dtype(x.scalar_type())));
  at::Tensor out =
      return_map ? at::empty({g.B, 1, g.H, g.W}, x.options()) : cpu::empty_output(x.sizes(), x.options(), fmt);
  if (pooled.numel() == 0) return {out, pooled};
  const cpu::F32Kernels* K = &cpu::f32_kernels();  // the ISA is chosen once per call
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sam_fused_fwd_cpu", [&] {
    using A = acc_t<scalar_t>;
    const auto prm = load_params<scalar_t>(weight, bias);
    const RowSplit sp = split_rows(g, sizeof(scalar_t), false);
    const bool from_mem = from_memory(xc);
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    A* qp = pooled.mutable_data_ptr<A>();
    for_each_item(g, sp, [&](int64_t it, bool next_here) {
      if (g.channels_last) forward_item<scalar_t, true>(g, sp, it, xp, op, qp, prm, return_map, from_mem, next_here, K);
      else forward_item<scalar_t, false>(g, sp, it, xp, op, qp, prm, return_map, from_mem, next_here, K);
    });
  });
  return {out, pooled};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatial_attention_bwd_cpu(const at::Tensor& grad_out,
                                                                         const at::Tensor& x, const at::Tensor& weight,
                                                                         const std::optional<at::Tensor>& bias,
                                                                         const at::Tensor& pooled,
                                                                         const std::string& pool, bool return_map) {
  const Geometry g = check_bwd_inputs(grad_out, x, weight, bias, pooled, pool, return_map);
  TORCH_CHECK_VALUE(g.C <= std::numeric_limits<int32_t>::max(), "x has too many channels (", g.C, ")");
  const auto fmt = compute_format(x);
  const at::Tensor xc = x.contiguous(fmt);
  const at::Tensor gc = grad_out.to(x.scalar_type()).contiguous(return_map ? at::MemoryFormat::Contiguous : fmt);
  const at::Tensor qc = pooled.contiguous();
  at::Tensor dx = cpu::empty_output(x.sizes(), x.options(), fmt);
  const int64_t nw = g.pool.P * g.kh * g.kw;
  std::vector<double> dw(nw + 1, 0.0);
  if (x.numel() > 0) {
    const cpu::F32Kernels* K = &cpu::f32_kernels();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sam_fused_bwd_cpu", [&] {
      using A = acc_t<scalar_t>;
      const auto prm = load_params<scalar_t>(weight, bias);
      const RowSplit sp = split_rows(g, sizeof(scalar_t), true);
      const bool stream = from_memory(dx);  // and so are x and g
      std::vector<double> partials(sp.items(g) * (nw + 1), 0.0);
      const scalar_t* gp = gc.const_data_ptr<scalar_t>();
      const scalar_t* xp = xc.const_data_ptr<scalar_t>();
      const A* qp = qc.const_data_ptr<A>();
      scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
      for_each_item(g, sp, [&](int64_t it, bool next_here) {
        double* part = partials.data() + it * (nw + 1);
        if (g.channels_last)
          backward_item<scalar_t, true>(g, sp, it, gp, xp, qp, dxp, prm, return_map, stream, next_here, part, K);
        else backward_item<scalar_t, false>(g, sp, it, gp, xp, qp, dxp, prm, return_map, stream, next_here, part, K);
      });
      for (int64_t it = 0; it < sp.items(g); ++it)  // fixed order: deterministic
        for (int64_t k = 0; k <= nw; ++k) dw[k] += partials[it * (nw + 1) + k];
    });
  }
  // Rounded from the double sums straight into the outputs (a from_blob, clone and cast cost
  // four small allocations and copies per call: several microseconds of a batch-1 step).
  at::Tensor gw = at::empty(weight.sizes(), weight.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor gbias = at::empty({1}, weight.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "sam_fused_bwd_cpu_dw", [&] {
    std::transform(dw.begin(), dw.begin() + nw, gw.mutable_data_ptr<scalar_t>(), [](double v) { return scalar_t(v); });
    gbias.mutable_data_ptr<scalar_t>()[0] = scalar_t(dw[nw]);
  });
  return {dx, gw, gbias};
}

}  // namespace sam_fused

TORCH_LIBRARY_IMPL(sam_fused, CPU, m) {
  m.impl("spatial_attention_fwd", &sam_fused::spatial_attention_fwd_cpu);
  m.impl("spatial_attention_bwd", &sam_fused::spatial_attention_bwd_cpu);
}
