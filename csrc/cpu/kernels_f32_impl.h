// The fp32 hot loops (kernels_f32.h), written once over a vector type of simd.h. Included only
// by kernels_f32_<isa>.cpp, inside that ISA's target region, with SAM_FUSED_ISA_NS (the namespace of
// this copy) and SAM_FUSED_VEC (its vector type) defined; everything else those files include comes
// before the region, so no inline function shared with other files is built for this ISA.
//
// Each pass has its own loop with only its own terms (no per-element tests), the channel
// reductions keep their accumulators in registers across all channels of a group of pixels, and
// prefetches are issued once per channel run, outside the element loops.

namespace sam_fused::cpu::SAM_FUSED_ISA_NS {
namespace {

using V = SAM_FUSED_VEC;
using R = typename V::R;
constexpr int64_t N = V::N;
template <class S> constexpr int64_t kLineElems = 64 / sizeof(S);  // elements of storage S per cache line

// One element of storage S as float, as V::load converts it (exactly: every 16-bit value is a float).
template <class S> SAM_FUSED_SIMD_INLINE float scalar_float(S v) {
  if constexpr (std::is_same_v<S, float>) return v;
  else return widen1(v);
}

// The regions pf[0, npf) (at most two: the backward fetches x and g), each `runs` runs of
// run_bytes, `stride` apart, fetched into L2 in step with a streamed write of `total` elements:
// whenever the write reaches the next group of kPrefetchGroup elements, each region's lines are
// requested up to the same fraction. Small groups rather than a run at a time: on a VM's EPYC,
// bursts of a whole run (36 lines at 2304-byte runs) left the forward 1.3x slower from memory
// than four lines every four written, and a line per line written measured slower than the
// groups (docs/cpu-results.md). Cached writes (x in cache too) fetch nothing: there the calls
// cost more than they gain. The issuing is in member functions that write this object: GCC 12
// took a free function of prefetches alone for pure and deleted its calls (which the test of the
// built code's prefetches guards).
class SpreadPrefetch {
 public:
  static constexpr int64_t kPrefetchGroup = 64;

  SpreadPrefetch(const PrefetchRuns* pf, int npf, int64_t runs, int64_t total) : total_(total) {
    for (int q = 0; q < std::min(npf, 2); ++q) {
      if (!pf[q].base || pf[q].run_bytes <= 0 || runs <= 0) continue;
      // runs back to back are one run: the walk then never leaves its run
      const bool joined = pf[q].stride == pf[q].run_bytes;
      const int64_t run_lines = ((joined ? runs : 1) * pf[q].run_bytes + 63) / 64;
      Walk& w = walks_[nwalks_++];
      w.run = w.p = pf[q].base;
      w.line0 = reinterpret_cast<uintptr_t>(w.run);
      w.run_span = run_lines * 64;
      w.end = w.run + w.run_span;
      w.stride = pf[q].stride;
      w.lines = (joined ? 1 : runs) * run_lines;
      // lines due per element written, in 32.32 fixed point (no division per group)
      w.rate = (uint64_t(w.lines) << 32) / uint64_t(std::max<int64_t>(total, 1));
    }
    next_ = nwalks_ > 0 && total > 0 ? 0 : std::numeric_limits<int64_t>::max();
  }
  // Called with the elements written so far, before writing more. Inline while the lines due
  // stay in the current run (the address of a line is then linear in its number), the pointer in
  // a register: a call per group, its walk kept in the object, cost more instructions than its
  // prefetches. Crossing into the next run and the last group take the call.
  SAM_FUSED_SIMD_INLINE void at(int64_t done) {
    if (done < next_) return;
    const int64_t upto = done + kPrefetchGroup;
    if (upto >= total_) return issue_rest();
    for (int q = 0; q < nwalks_; ++q) {
      Walk& w = walks_[q];
      const int64_t goal = int64_t((w.rate * uint64_t(upto)) >> 32);  // < w.lines as upto < total
      const uintptr_t stop = w.line0 + uintptr_t(goal) * 64;
      if (stop > reinterpret_cast<uintptr_t>(w.end)) {
        advance(w, goal);
        continue;
      }
      const char* p = w.p;
      for (; reinterpret_cast<uintptr_t>(p) < stop; p += 64) __builtin_prefetch(p, 0, 2);
      w.p = p;
    }
    next_ = upto;
  }
  bool active() const { return nwalks_ > 0; }
  // Whatever is left (a write shorter than the next band's regions).
  void finish() {
    if (next_ != std::numeric_limits<int64_t>::max()) issue_rest();
  }

 private:
  // p: the next line to request, in the run from `run` to `end`; the next run starts `stride` on.
  // line0: the address line 0 would have if every run so far were laid out like this one
  // (line k of this run is at line0 + 64 k).
  struct Walk {
    const char *run, *p, *end;
    uintptr_t line0;
    int64_t stride, run_span, lines;
    uint64_t rate;
  };
  // Requests w's lines up to line `goal`, run by run.
  void advance(Walk& w, int64_t goal) {
    int64_t issued = int64_t((reinterpret_cast<uintptr_t>(w.p) - w.line0) / 64);
    for (; issued < goal; ++issued, w.p += 64) {
      if (w.p == w.end) {
        w.run += w.stride, w.p = w.run, w.end = w.run + w.run_span;
        w.line0 = reinterpret_cast<uintptr_t>(w.run) - uintptr_t(issued) * 64;
      }
      __builtin_prefetch(w.p, 0, 2);
    }
  }
  void issue_rest() {
    for (int q = 0; q < nwalks_; ++q) advance(walks_[q], walks_[q].lines);
    next_ = std::numeric_limits<int64_t>::max();
  }
  Walk walks_[2];
  int nwalks_ = 0;
  int64_t total_, next_;
};

// Elements of S before the first 64-byte line boundary at p.
template <class S> inline int64_t line_head(const S* p) {
  return ((64 - (reinterpret_cast<uintptr_t>(p) & 63)) & 63) / int64_t(sizeof(S));
}

// One output row of n elements: o[i, i+k) = f(i, k) (k = N but at the tail). With `stream`,
// whole 64-byte lines are stored non-temporally: a large output is written once and not read
// back here, so its lines need not be fetched first (what lets the fused op match x.clone()'s
// 2N bytes). The partial lines at the ends, which a neighbouring row also writes, take plain
// stores. f computes the same vector operations wherever the row's lines begin.
// tick(i) before each streamed whole line from element i (the write's prefetches).
template <class S, class F, class Tick>
SAM_FUSED_SIMD_INLINE void write_row(S* o, int64_t n, bool stream, F&& f, Tick&& tick) {
  constexpr int64_t kLine = kLineElems<S>;
  int64_t i = 0;
  if (stream && n >= 2 * kLine) {  // at least one whole line wherever the row starts
    const int64_t head = std::min(n, line_head(o));
    for (; i < head; i += N) V::store_k(o + i, f(i, std::min(N, head - i)), std::min(N, head - i));
    i = head;
    const int64_t lines_end = head + (n - head) / kLine * kLine;
    for (; i < lines_end; i += kLine) {
      tick(i);
#pragma GCC unroll 4
      for (int64_t v = 0; v < kLine; v += N) V::stream(o + i + v, f(i + v, N));
    }
  }
  for (; i + 4 * N <= n; i += 4 * N) {
    V::store(o + i, f(i, N));
    V::store(o + i + N, f(i + N, N));
    V::store(o + i + 2 * N, f(i + 2 * N, N));
    V::store(o + i + 3 * N, f(i + 3 * N, N));
  }
  for (; i < n; i += N) V::store_k(o + i, f(i, std::min(N, n - i)), std::min(N, n - i));
}
template <class S, class F> SAM_FUSED_SIMD_INLINE void write_row(S* o, int64_t n, bool stream, F&& f) {
  write_row(o, n, stream, f, [](int64_t) __attribute__((always_inline)) {});
}

// out[c*stride + i] = f(c, c*stride + i, i, k) for every channel c < C and i < n (k lanes
// from there). Flat (the runs are back to back, stride == n): one streamed region over all C*n,
// so that lines spanning two channels' runs are streamed too (short runs of small-H maps would
// otherwise write most lines in two plain halves). There each vector and line belongs to the
// channel c its first lane is in (i = its offset in that run), so lanes past the run's end
// belong to later channels: f must read its per-pixel rows from copies that continue them
// periodically for a line (extend_row), and f's c is the first lane's channel.
template <class S, class F>
SAM_FUSED_SIMD_INLINE void write_channels(S* out, int64_t C, int64_t stride, int64_t n, bool flat, bool stream,
                                          const PrefetchRuns* pf, int npf, F&& f) {
  SpreadPrefetch ahead(pf, stream ? npf : 0, C, C * n);
  if (!flat) {
    for (int64_t c = 0; c < C; ++c)
      write_row(
          out + c * stride, n, stream,
          [&](int64_t i, int64_t k) __attribute__((always_inline)) { return f(c, c * stride + i, i, k); },
          [&](int64_t i) __attribute__((always_inline)) { ahead.at(c * n + i); });
  } else {
    constexpr int64_t kLine = kLineElems<S>;
    const int64_t total = C * n, head = std::min(total, line_head(out));
    const int64_t lines_end = head + (total - head) / kLine * kLine;
    int64_t o = 0;  // the next element to write
    for (int64_t c = 0, base = 0; c < C; ++c, base += n) {
      const int64_t run_end = base + n, head_end = std::min(head, run_end), lines_stop = std::min(lines_end, run_end);
      // step by k, not N: the lines begin exactly at head (a run may end inside the head)
      for (int64_t k; o < head_end; o += k) {
        k = std::min(N, head - o);
        V::store_k(out + o, f(c, o, o - base, k), k);
      }
      for (; o < lines_stop; o += kLine) {
        ahead.at(o);
#pragma GCC unroll 4
        for (int64_t v = 0; v < kLine; v += N) V::stream(out + o + v, f(c, o + v, o - base + v, N));
      }
      for (; o < run_end; o += N) {
        const int64_t k = std::min(N, total - o);
        V::store_k(out + o, f(c, o, o - base, k), k);
      }
    }
  }
  ahead.finish();
  if (stream) V::sfence();  // order the non-temporal stores before the op returns
}

// Vectors per block of write_blocked: at least 4 and 32 lanes (the per-channel loop overhead of
// a block is then a small part of its work on 4-lane SSE2 too), and whole 64-byte lines of S.
template <class S> constexpr int64_t kBlockVecs = std::max<int64_t>({4, 32 / N, kLineElems<S> / N});

// Whether every channel run starts at the same offset within a line (stride is whole lines):
// then write_blocked streams all channels' whole lines.
template <class S> inline bool lines_aligned_across_channels(int64_t stride) {
  return (stride * int64_t(sizeof(S))) % 64 == 0;
}

// out[c*stride + i] for every channel c < C and pixel i < n, pixels outer and channels inner:
// the per-pixel operands of a block of kBlockVecs vectors are loaded once (load(i, k)) and kept
// in registers while f(c, c*stride + i, operands, k) makes the vector of each channel, so the
// rows that every channel shares (s, the pooled-map gradient, the argmax) are not reloaded per
// channel. With `stream`, the blocks (whole lines, as stride is whole lines: the caller checks
// lines_aligned_across_channels) take non-temporal stores, the partial runs at both ends plain
// ones. The prefetch runs are spread evenly over the blocks.
template <class S, class Load, class F>
SAM_FUSED_SIMD_INLINE void write_blocked(S* out, int64_t C, int64_t stride, int64_t n, bool stream,
                                         const PrefetchRuns* pf, int npf, Load&& load, F&& f) {
  constexpr int64_t NV = kBlockVecs<S>, B = NV * N;
  const int64_t head = stream ? std::min(n, line_head(out)) : 0;
  const int64_t nblocks = (n - head) / B, body_end = head + nblocks * B;
  SpreadPrefetch ahead(pf, stream ? npf : 0, C, nblocks * C * B);
  int64_t done = 0;  // elements the streamed blocks have written
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t i = head + b * B;
    decltype(load(i, N)) ops[NV];
#pragma GCC unroll 16
    for (int64_t v = 0; v < NV; ++v) ops[v] = load(i + v * N, N);
    // one induction variable (off) for the input and output rows: c is dead where f ignores it
    const int64_t end = i + C * stride;
    int64_t c = 0;
    if (stream) {
      for (int64_t off = i; off != end; off += stride, ++c, done += B) {
        ahead.at(done);
#pragma GCC unroll 16
        for (int64_t v = 0; v < NV; ++v) V::stream(out + off + v * N, f(c, off + v * N, ops[v], N));
      }
    } else {
      for (int64_t off = i; off != end; off += stride, ++c)
#pragma GCC unroll 16
        for (int64_t v = 0; v < NV; ++v) V::store(out + off + v * N, f(c, off + v * N, ops[v], N));
    }
  }
  ahead.finish();
  // the partial runs: [0, head) and [body_end, n) of each channel
  auto part = [&](int64_t i0, int64_t i1) __attribute__((always_inline)) {
    for (int64_t i = i0; i < i1; i += N) {
      const int64_t k = std::min(N, i1 - i);
      const auto op = load(i, k);
      for (int64_t c = 0; c < C; ++c) V::store_k(out + c * stride + i, f(c, c * stride + i, op, k), k);
    }
  };
  part(0, head);
  part(body_end, n);
  if (stream) V::sfence();
}

// Runs that are back to back and streamed take the flat path of write_channels.
inline bool flat_runs(int64_t stride, int64_t n, bool stream) { return stream && stride == n; }

// row[0, n) continued periodically for kLineElems<S> elements (ext[n + j] = row[j % n]): what
// write_channels' flat path over storage S reads at i in [0, n + kLineElems<S>).
template <class S> std::unique_ptr<float[]> extend_row(const float* row, int64_t n) {
  constexpr int64_t kExt = kLineElems<S>;
  std::unique_ptr<float[]> ext(new float[n + kExt]);
  std::memcpy(ext.get(), row, n * sizeof(float));
  for (int64_t j = 0; j < kExt; j += n) std::memcpy(ext.get() + n + j, row, std::min(n, kExt - j) * sizeof(float));
  return ext;
}

// n values of T on the stack when n <= kLocal (a 7x7 conv of two maps needs 98 taps), else on the
// heap: the conv passes run once per band, and a heap allocation there showed in the counts of
// cache-resident layers.
template <class T, int64_t kLocal> struct SmallBuffer {
  T local[kLocal];
  std::unique_ptr<T[]> heap;
  explicit SmallBuffer(int64_t n) : heap(n > kLocal ? new T[n] : nullptr) {}
  T* get() { return heap ? heap.get() : local; }
  T& operator[](int64_t i) { return get()[i]; }
};

template <bool kMax> SAM_FUSED_SIMD_INLINE R pool_op(R acc, R v) { return kMax ? V::max_nan(acc, v) : V::add(acc, v); }

// r0..r3 = pool_op(r0..r3, x) over 4 vectors of pixels (of one channel).
template <bool kMax, class S> SAM_FUSED_SIMD_INLINE void pool4(R& r0, R& r1, R& r2, R& r3, const S* p) {
  r0 = pool_op<kMax>(r0, V::load(p));
  r1 = pool_op<kMax>(r1, V::load(p + N));
  r2 = pool_op<kMax>(r2, V::load(p + 2 * N));
  r3 = pool_op<kMax>(r3, V::load(p + 3 * N));
}

// The `count` channels at p (stride apart) into the chains of 4 vectors of pixels: even
// channels into a, odd ones into b, each in channel order, four channels an iteration.
template <bool kMax, class S>
SAM_FUSED_SIMD_INLINE void pool_channels(R& a0, R& a1, R& a2, R& a3, R& b0, R& b1, R& b2, R& b3, const S* p,
                                         int64_t count, int64_t stride) {
  int64_t c = 0;
  for (; c + 4 <= count; c += 4, p += 4 * stride) {
    pool4<kMax>(a0, a1, a2, a3, p);
    pool4<kMax>(b0, b1, b2, b3, p + stride);
    pool4<kMax>(a0, a1, a2, a3, p + 2 * stride);
    pool4<kMax>(b0, b1, b2, b3, p + 3 * stride);
  }
  if (c + 2 <= count) {
    pool4<kMax>(a0, a1, a2, a3, p);
    pool4<kMax>(b0, b1, b2, b3, p + stride);
    c += 2;
    p += 2 * stride;
  }
  if (c < count) pool4<kMax>(a0, a1, a2, a3, p);  // the last, even channel
}

// The same for the first k lanes of one vector of pixels (a run's tail): a and b, two channels
// an iteration.
template <bool kMax, class S>
SAM_FUSED_SIMD_INLINE void pool_channels_k(R& a, R& b, const S* p, int64_t count, int64_t stride, int64_t k) {
  const int64_t pairs_end = count & ~int64_t(1);
  for (int64_t c = 0; c < pairs_end; c += 2, p += 2 * stride) {
    a = pool_op<kMax>(a, V::load_k(p, k));
    b = pool_op<kMax>(b, V::load_k(p + stride, k));
  }
  if (pairs_end < count) a = pool_op<kMax>(a, V::load_k(p, k));  // the last, even channel
}

// Each pixel's sum runs in two chains, even and odd channels, added at the end: half the
// rounding of one chain over C (and two independent dependency chains). The max is exact in
// any order; it keeps the same loop. Four channels per iteration of the channel loop: its
// overhead is then a small part of it.
template <bool kMax, class S> void pool(const S* x, int64_t C, int64_t stride, int64_t n, float* out) {
  const R init = kMax ? V::set1(-std::numeric_limits<float>::infinity()) : V::zero();
  int64_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {  // 4 vectors of pixels x 2 chains stay in registers over all C
    R a0 = init, a1 = init, a2 = init, a3 = init, b0 = init, b1 = init, b2 = init, b3 = init;
    pool_channels<kMax>(a0, a1, a2, a3, b0, b1, b2, b3, x + i, C, stride);
    V::store(out + i, pool_op<kMax>(a0, b0));
    V::store(out + i + N, pool_op<kMax>(a1, b1));
    V::store(out + i + 2 * N, pool_op<kMax>(a2, b2));
    V::store(out + i + 3 * N, pool_op<kMax>(a3, b3));
  }
  for (; i < n; i += N) {
    const int64_t k = std::min(N, n - i);
    R a = init, b = init;
    pool_channels_k<kMax>(a, b, x + i, C, stride, k);
    V::store_k(out + i, pool_op<kMax>(a, b), k);
  }
}

// pool's sums (the same chains, each in channel order: the same bits) with the channels taken in
// blocks of kPoolBlock, each block over the whole runs, its sums waiting in a row in L1 between
// blocks. pool reads every channel's run one group of 4 vectors at a time, so where a run is
// longer than a group it sweeps the band once per group, as many interleaved strided streams as
// channels; on a VM with a 32 KiB L1d that pass took twice as long at 144-pixel runs as at
// 72-pixel ones (docs/cpu-results.md). A block reads kPoolBlock runs front to back.
constexpr int64_t kPoolBlock = 16;  // even: a block starts each chain on its own parity
template <bool kMax, class S> void pool_blocked(const S* x, int64_t C, int64_t stride, int64_t n, float* out) {
  const R init = kMax ? V::set1(-std::numeric_limits<float>::infinity()) : V::zero();
  SmallBuffer<float, 4096> sums(2 * n);  // chain a (even channels), then chain b (odd)
  float* const sa = sums.get();
  float* const sb = sa + n;
  for (int64_t c0 = 0; c0 < C; c0 += kPoolBlock) {
    const int64_t c1 = std::min(C, c0 + kPoolBlock);
    const bool first = c0 == 0, last = c1 == C;
    int64_t i = 0;
    for (; i + 4 * N <= n; i += 4 * N) {
      R a0 = init, a1 = init, a2 = init, a3 = init, b0 = init, b1 = init, b2 = init, b3 = init;
      if (!first) {
        a0 = V::load(sa + i), a1 = V::load(sa + i + N), a2 = V::load(sa + i + 2 * N), a3 = V::load(sa + i + 3 * N);
        b0 = V::load(sb + i), b1 = V::load(sb + i + N), b2 = V::load(sb + i + 2 * N), b3 = V::load(sb + i + 3 * N);
      }
      pool_channels<kMax>(a0, a1, a2, a3, b0, b1, b2, b3, x + c0 * stride + i, c1 - c0, stride);
      if (last) {
        V::store(out + i, pool_op<kMax>(a0, b0));
        V::store(out + i + N, pool_op<kMax>(a1, b1));
        V::store(out + i + 2 * N, pool_op<kMax>(a2, b2));
        V::store(out + i + 3 * N, pool_op<kMax>(a3, b3));
      } else {
        V::store(sa + i, a0), V::store(sa + i + N, a1), V::store(sa + i + 2 * N, a2), V::store(sa + i + 3 * N, a3);
        V::store(sb + i, b0), V::store(sb + i + N, b1), V::store(sb + i + 2 * N, b2), V::store(sb + i + 3 * N, b3);
      }
    }
    for (; i < n; i += N) {
      const int64_t k = std::min(N, n - i);
      R a = first ? init : V::load_k(sa + i, k), b = first ? init : V::load_k(sb + i, k);
      pool_channels_k<kMax>(a, b, x + c0 * stride + i, c1 - c0, stride, k);
      if (last) V::store_k(out + i, pool_op<kMax>(a, b), k);
      else V::store_k(sa + i, a, k), V::store_k(sb + i, b, k);
    }
  }
}

// A streamed output (x from memory) is written one channel run at a time, front to back, with
// the next band's prefetches spread over it: the blocks of write_blocked write and read C
// interleaved runs, which from memory left the forward 1.2-1.4x slower once the prefetches ran
// (docs/cpu-results.md). A cached output keeps the blocks (s loaded once per block).
template <class S>
void scale(S* out, const S* x, const float* s, int64_t C, int64_t stride, int64_t n, bool stream,
           const PrefetchRuns* pf, int npf) {
  if (!stream)
    return write_blocked(
        out, C, stride, n, stream, pf, npf,
        [&](int64_t i, int64_t k) __attribute__((always_inline)) { return V::load_k(s + i, k); },
        [&](int64_t, int64_t off, R si, int64_t k)
            __attribute__((always_inline)) { return V::mul(V::load_k(x + off, k), si); });
  const bool flat = flat_runs(stride, n, stream);
  const auto s_ext = flat ? extend_row<S>(s, n) : nullptr;
  const float* sr = flat ? s_ext.get() : s;
  write_channels(out, C, stride, n, flat, stream, pf, npf,
                 [&](int64_t, int64_t off, int64_t i, int64_t k)
                     __attribute__((always_inline)) { return V::mul(V::load_k(x + off, k), V::load_k(sr + i, k)); });
}

// exp_clamped's range: exp is a normal float in it (2^n with n in [-125, 128], built as 2 * 2^(n - 1)).
// Its top is the largest float whose exp is finite (88.7228391), where float's own exp and
// torch.sigmoid overflow: below it the sigmoid is a subnormal float, not 0.
constexpr float kExpLowest = -86.9f, kExpHighest = 88.7228317f;
// exp_minus's scale past that range: for any distance d past it (float steps there are 7.6e-6),
// e * (1 + kExpHuge * d) overflows and 1 - kExpHuge * d is below 0.
constexpr float kExpHuge = 1e38f;

// exp(x) for x in [kExpLowest, kExpHighest] (or NaN, which passes through): Cephes' expf, a degree-5
// polynomial on x - n*ln2 times 2^n; within 2 ulp of the correctly rounded result. 2^n is 2 * 2^(n - 1),
// the 2 taken into the polynomial's last step (exact): 2^128 is no float, and n is 128 in the range's top.
SAM_FUSED_SIMD_INLINE R exp_clamped(R x) {
  const R n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  R r = V::fmadd(n, V::set1(-0.693359375f), x);
  r = V::fmadd(n, V::set1(2.12194440e-4f), r);
  R p = V::set1(1.9875691500e-4f);
  p = V::fmadd(p, r, V::set1(1.3981999507e-3f));
  p = V::fmadd(p, r, V::set1(8.3334519073e-3f));
  p = V::fmadd(p, r, V::set1(4.1665795894e-2f));
  p = V::fmadd(p, r, V::set1(1.6666665459e-1f));
  p = V::fmadd(p, r, V::set1(5.0000001201e-1f));
  const R two = V::set1(2.f);
  return V::mul(V::fmadd(V::fmadd(p, V::mul(r, r), r), two, two), V::pow2(V::sub(n, V::set1(1.f))));
}

// exp(-a) for the sigmoid 1 / (1 + exp(-a)) and the backward's s(1 - s) = e / (1 + e)^2: inf
// where -a > 88.7228 and 0 where -a < -86.9 (exp overflows there, so s is 0 as float's own
// sigmoid gives; below, s is 1 either way and s(1 - s) is 0, as float's own gives), NaN kept.
// The polynomial sees -a clamped to its range, and the clamp's constant is scaled to inf or 0
// by factors that are exactly 1 inside the range: a clamped constant alone gave s = 4.5e-39 at
// any a below -88.3, and s(1 - s) of 4.5e-39 and 1.2e-38, which a rho of 1e37 or more (an
// input of that size) turned into a gradient.
SAM_FUSED_SIMD_INLINE R exp_minus(R a) {
  const R t = V::sub(V::zero(), a), lo = V::set1(kExpLowest), hi = V::set1(kExpHighest), one = V::set1(1.f);
  const R e = exp_clamped(V::max(lo, V::min(hi, t)));
  const R over = V::fmadd(V::max(V::zero(), V::sub(t, hi)), V::set1(kExpHuge), one);  // 1, or inf
  const R under = V::max(V::zero(), V::fmadd(V::max(V::zero(), V::sub(lo, t)), V::set1(-kExpHuge), one));
  return V::mul(V::mul(e, over), under);  // under: 1, or 0
}

#include "pointwise_f64_impl.h"

// sigmoid(a) = 1 / (1 + e) from e = exp_minus(a), in W's lanes (V's floats, or VecF64's doubles).
template <class W = V> SAM_FUSED_SIMD_INLINE typename W::R sigmoid_of_exp(typename W::R e) {
  return W::div(W::set1(1), W::add(W::set1(1), e));
}

// The slope s(1 - s) from e = exp_minus(a) and s = sigmoid_of_exp(e), as s * min(e * s, 1): a few
// ulps relative at every a, where 1 - s of the rounded s loses the digits s lost near s = 1.
// min(., 1) takes 1 where e * s is inf * 0 (a < -88.7228 in float: s is 0 and 1 - s is 1); where a
// is NaN, s is NaN and so is the slope.
template <class W = V> SAM_FUSED_SIMD_INLINE typename W::R sigmoid_slope_of_exp(typename W::R e, typename W::R s) {
  return W::mul(s, W::min(W::mul(e, s), W::set1(1)));
}

// f(k, load, store) for the vectors of a run of n elements: the whole vectors with plain loads
// and stores, then the tail (fewer than N lanes) with masked ones, which load the same lanes:
// the masks stay out of the loop. load and store take float or 16-bit storage (converted), or
// double with W = VecF64.
template <class W = V, class F> SAM_FUSED_SIMD_INLINE void each_vector(int64_t n, F&& f) {
  using WR = typename W::R;
  int64_t k = 0;
  for (; k + W::N <= n; k += W::N)
    f(k, [](const auto* a) { return W::load(a); }, [](auto* a, WR v) { W::store(a, v); });
  if (k < n) {
    const int64_t kk = n - k;
    f(k, [kk](const auto* a) { return W::load_k(a, kk); }, [kk](auto* a, WR v) { W::store_k(a, v, kk); });
  }
}

// f(k, load, store, u) for groups of U vectors (u: std::integral_constant<int, U>) while whole
// groups remain, then each_vector's single vectors and masked tail (U = 1). A body that takes
// each step for all U vectors of its group before the next step (loops over j < U, unrolled)
// gives U independent dependency chains side by side, where one vector's chain (the exp's
// polynomial, the division, the 16-bit conversions) would leave the core waiting on latency.
template <int U, class W = V, class F> SAM_FUSED_SIMD_INLINE void each_vector_group(int64_t n, F&& f) {
  using WR = typename W::R;
  const int64_t whole = n / (U * W::N) * (U * W::N);
  for (int64_t k = 0; k < whole; k += U * W::N)
    f(
        k, [](const auto* a) { return W::load(a); }, [](auto* a, WR v) { W::store(a, v); },
        std::integral_constant<int, U>{});
  each_vector<W>(n - whole, [&](int64_t k, auto load, auto store) {
    f(whole + k, load, store, std::integral_constant<int, 1>{});
  });
}

// The point-wise op (PointwiseKernels), element by element over storage S, kPointwiseGroup
// vectors at a time: float lanes (16-bit storage converted), double lanes for double.
constexpr int kPointwiseGroup = 4;
template <class S> using PointwiseLanes = std::conditional_t<std::is_same_v<S, double>, VecF64, V>;

template <class S> void pointwise_fwd(const S* x, const S* y, S* out, int64_t n) {
  using W = PointwiseLanes<S>;
  each_vector_group<kPointwiseGroup, W>(n, [&](int64_t k, auto load, auto store, auto u) {
    constexpr int U = decltype(u)::value;
    typename W::R e[U];
#pragma GCC unroll 8
    for (int j = 0; j < U; ++j) e[j] = exp_minus(load(y + k + j * W::N));
#pragma GCC unroll 8
    for (int j = 0; j < U; ++j) store(out + k + j * W::N, W::mul(load(x + k + j * W::N), sigmoid_of_exp<W>(e[j])));
  });
}

template <class S> void pointwise_bwd(const S* g, const S* x, const S* y, S* dx, S* dy, int64_t n) {
  using W = PointwiseLanes<S>;
  each_vector_group<kPointwiseGroup, W>(n, [&](int64_t k, auto load, auto store, auto u) {
    constexpr int U = decltype(u)::value;
    typename W::R e[U], s[U];
#pragma GCC unroll 8
    for (int j = 0; j < U; ++j) e[j] = exp_minus(load(y + k + j * W::N));
#pragma GCC unroll 8
    for (int j = 0; j < U; ++j) s[j] = sigmoid_of_exp<W>(e[j]);
#pragma GCC unroll 8
    for (int j = 0; j < U; ++j) {
      const auto gv = load(g + k + j * W::N);
      store(dx + k + j * W::N, W::mul(gv, s[j]));
      store(dy + k + j * W::N, W::mul(W::mul(gv, load(x + k + j * W::N)), sigmoid_slope_of_exp<W>(e[j], s[j])));
    }
  });
}

// s[k] = sigmoid(bias + sum of the taps at q + off[t] + k), k < n, the taps in the order of
// sam_fused::conv_pixel, summed in double and rounded to float once before the sigmoid. The
// taps of a conv over the pooled maps cancel heavily (a 7x7 conv of two maps: 98 terms whose
// magnitudes add up to many times the result's), so a float sum carried errors of several ulp
// of s, which the bias gradient (a sum of s(1-s) over every pixel) added up; the conv is a
// small part of the work. TAPS > 0: the tap count at compile time (the HAR layer's 3x1 over one
// or two maps), so the tap loop unrolls; 0: `taps` at run time. The same operations either way.
template <int TAPS = 0>
SAM_FUSED_SIMD_INLINE void conv_run(const float* w, float bias, int64_t taps, const int64_t* off, const float* q,
                                    int64_t n, float* s, float* e) {
  const int64_t nt = TAPS > 0 ? TAPS : taps;
  int64_t o[TAPS > 0 ? TAPS : 1];  // TAPS > 0: the offsets in registers, loaded once
  if constexpr (TAPS > 0)
    for (int t = 0; t < TAPS; ++t) o[t] = off[t];
  const int64_t* const offset = TAPS > 0 ? o : off;
  each_vector(n, [&](int64_t k, auto load, auto store) {
    typename V::Wide acc = V::wide_set1(bias);
    for (int64_t t = 0; t < nt; ++t) acc = V::wide_fmadd(w[t], load(q + offset[t] + k), acc);
    const R ek = exp_minus(V::narrow(acc));
    store(s + k, sigmoid_of_exp(ek));
    if (e) store(e + k, ek);
  });
}

void conv_sigmoid(const float* w, float bias, int64_t P, int64_t kh, int64_t kw, const float* q, int64_t plane,
                  int64_t row, int64_t rows, int64_t W, float* s, float* e) {
  const int64_t taps = P * kh * kw;
  SmallBuffer<int64_t, 128> off(taps);  // tap t's offset in q
  for (int64_t p = 0; p < P; ++p)
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) off[(p * kh + i) * kw + j] = p * plane + i * row + j;
  if (row == W && taps == 3) return conv_run<3>(w, bias, taps, off.get(), q, rows * W, s, e);  // 3x1, one map
  if (row == W && taps == 6) return conv_run<6>(w, bias, taps, off.get(), q, rows * W, s, e);  // 3x1, two maps
  if (row == W) return conv_run(w, bias, taps, off.get(), q, rows * W, s, e);  // unpadded: one run
  for (int64_t r = 0; r < rows; ++r) conv_run(w, bias, taps, off.get(), q + r * row, W, s + r * W, e ? e + r * W : e);
}

// conv_backward over one run of n elements (rows*W when no row is padded, else one row):
// per-lane double partials of each dw sum in acc ([taps + 1][N]), added up by the caller.
// P0, KH0, KW0 > 0: the kernel shape at compile time (the HAR layer's 3x1 over one or two maps),
// so the tap loops unroll and the weights stay in registers: with the shape at run time the
// loop control and addressing of a tap cost about three times its arithmetic (callgrind, AVX2,
// (16,64,64,9): 21 instructions a pixel for the 3x1 backward conv). 0: P, kh, kw at run time.
// The same operations in the same order either way.
template <int P0 = 0, int KH0 = 0, int KW0 = 0>
SAM_FUSED_SIMD_INLINE void conv_backward_run(const float* w, int64_t P_, int64_t kh_, int64_t kw_, const float* delta,
                                             int64_t drow, const float* q, int64_t qplane, int64_t qrow, int64_t n,
                                             float* const* gamma, double* acc) {
  constexpr bool fixed = P0 > 0 && KH0 > 0 && KW0 > 0;
  const int64_t P = fixed ? P0 : P_, kh = fixed ? KH0 : kh_, kw = fixed ? KW0 : kw_;
  const int64_t rh = kh / 2, rw = kw / 2, taps = P * kh * kw;
  R wt[fixed ? P0 * KH0 * KW0 : 1];
  if constexpr (fixed)
    for (int t = 0; t < P0 * KH0 * KW0; ++t) wt[t] = V::set1(w[t]);
  auto weight = [&](int64_t t) {
    if constexpr (fixed) return wt[t];
    else return V::set1(w[t]);
  };
  each_vector(n, [&](int64_t k, auto load, auto store) {
    const R d = load(delta + k);
    V::mul_to_double(acc + taps * N, d, V::set1(1.f));
    for (int64_t p = 0; p < P; ++p) {
      R gacc = V::zero();
      for (int64_t i = 0; i < kh; ++i)
        for (int64_t j = 0; j < kw; ++j) {
          const int64_t t = (p * kh + i) * kw + j;
          gacc = V::fmadd(weight(t), load(delta + (rh - i) * drow + rw - j + k), gacc);
          V::mul_to_double(acc + t * N, d, load(q + p * qplane + (i - rh) * qrow + j - rw + k));
        }
      store(gamma[p] + k, gacc);
    }
  });
}

void conv_backward(const float* w, int64_t P, int64_t kh, int64_t kw, const float* delta, int64_t drow, const float* q,
                   int64_t qplane, int64_t qrow, int64_t rows, int64_t W, float* const* gamma, double* dw) {
  const int64_t taps = P * kh * kw;
  SmallBuffer<double, 2048> acc((taps + 1) * N);
  std::fill(acc.get(), acc.get() + (taps + 1) * N, 0.0);
  const bool unpadded = drow == W && qrow == W;  // the band is one run
  if (unpadded && kw == 1 && kh == 3 && P == 1) {
    conv_backward_run<1, 3, 1>(w, P, kh, kw, delta, drow, q, qplane, qrow, rows * W, gamma, acc.get());
  } else if (unpadded && kw == 1 && kh == 3 && P == 2) {
    conv_backward_run<2, 3, 1>(w, P, kh, kw, delta, drow, q, qplane, qrow, rows * W, gamma, acc.get());
  } else if (unpadded) {
    conv_backward_run(w, P, kh, kw, delta, drow, q, qplane, qrow, rows * W, gamma, acc.get());
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      float* const g_row[2] = {gamma[0] + r * W, P > 1 ? gamma[1] + r * W : nullptr};
      conv_backward_run(w, P, kh, kw, delta + r * drow, drow, q + r * qrow, qplane, qrow, W, g_row, acc.get());
    }
  }
  for (int64_t t = 0; t <= taps; ++t) {  // lanes in a fixed order: deterministic
    double sum = 0;
    for (int64_t l = 0; l < N; ++l) sum += acc[t * N + l];
    dw[t] += sum;
  }
}

// am[i] = the first channel c < C where x[c*stride + i] is largest, a NaN winning over numbers
// (argmax_update of sam_math.h, which routes the max-pool gradient as torch.max(dim) does): 4
// vectors of pixels keep their running max and index in registers over all C; channel 0 starts
// them, as it would win against the -inf start of argmax_update.
template <class S> void argmax(const S* x, int64_t C, int64_t stride, int64_t n, int32_t* am) {
  using RI = typename V::RI;
  int64_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    const S* p = x + i;
    R m0 = V::load(p), m1 = V::load(p + N), m2 = V::load(p + 2 * N), m3 = V::load(p + 3 * N);
    RI i0{}, i1{}, i2{}, i3{};
    p += stride;
    for (int64_t c = 1; c < C; ++c, p += stride) {
      const RI cv = V::set1i(int32_t(c));
      V::argmax_step(m0, i0, V::load(p), cv);
      V::argmax_step(m1, i1, V::load(p + N), cv);
      V::argmax_step(m2, i2, V::load(p + 2 * N), cv);
      V::argmax_step(m3, i3, V::load(p + 3 * N), cv);
    }
    V::storei_k(am + i, i0, N);
    V::storei_k(am + i + N, i1, N);
    V::storei_k(am + i + 2 * N, i2, N);
    V::storei_k(am + i + 3 * N, i3, N);
  }
  for (; i < n; i += N) {
    const int64_t k = std::min(N, n - i);
    R m = V::load_k(x + i, k);
    RI idx{};
    for (int64_t c = 1; c < C; ++c) V::argmax_step(m, idx, V::load_k(x + c * stride + i, k), V::set1i(int32_t(c)));
    V::storei_k(am + i, idx, k);
  }
}

constexpr int64_t kRhoRun = 16;  // channels summed in float before their sum is added in double

// r0..r3 += g * x over 4 vectors of pixels (of one channel).
template <class S>
SAM_FUSED_SIMD_INLINE void fma4(R& r0, R& r1, R& r2, R& r3, const S* gp, const S* xp) {
  r0 = V::fmadd(V::load(gp), V::load(xp), r0);
  r1 = V::fmadd(V::load(gp + N), V::load(xp + N), r1);
  r2 = V::fmadd(V::load(gp + 2 * N), V::load(xp + 2 * N), r2);
  r3 = V::fmadd(V::load(gp + 3 * N), V::load(xp + 3 * N), r3);
}

// Whole vectors (kWhole: plain loads and stores) or the first k lanes of one (masked).
template <bool kWhole> struct Lanes {
  int64_t k;
  template <class S> SAM_FUSED_SIMD_INLINE R load(const S* p) const {
    if constexpr (kWhole) return V::load(p);
    else return V::load_k(p, k);
  }
  SAM_FUSED_SIMD_INLINE void store(float* p, R v) const {
    if constexpr (kWhole) V::store(p, v);
    else V::store_k(p, v, k);
  }
  SAM_FUSED_SIMD_INLINE void add_to_double(double* d, R v) const {
    if constexpr (kWhole) V::add_to_double(d, v);
    else V::add_to_double_k(d, v, k);
  }
};

// The backward's rho pass reads x and g, from memory, one channel at a time where a channel's
// run is kInOrderBytes or more, each run front to back: two sequential streams. Reading several
// channels' runs together (the groups of 4 vectors of rho below, over runs of 16 channels, or
// blocks of 2-8 channels) makes two streams per channel: on a VM with a 32 KiB L1d, four (two
// channels' runs of x and of g) were read from memory at half the rate of two, at runs of 512
// bytes or more (docs/cpu-results.md). Shorter runs are read nearly front to back by the groups
// too, in fewer instructions. The forward's pool pass takes the same order up to 2 KiB runs
// (pool_in_order). From a cache (from_memory false: arrays the caches hold) the groups and blocks
// are faster at every run, in fewer instructions: 0.8-0.9x the forward's and the backward's time
// at runs of 1120 and 1152 bytes from L3, where from memory rho in order was 1.25-1.33x faster
// than the groups at 576 and 1152 (docs/cpu-results.md).
constexpr int64_t kInOrderBytes = 512;
template <class S> inline bool runs_in_order(int64_t C, int64_t n) {
  return C > 1 && n * int64_t(sizeof(S)) >= kInOrderBytes;
}

// The runs of channels [c0, c1), n elements each, one channel at a time, front to back:
// step(c, first, last, i, lanes) for the run's whole vectors, then its tail. Two chains of
// partial results (even and odd channels from c0, in channel order) wait in L1 rows between
// channels: first (c < c0 + 2: a chain's first channel) and last (c == c1 - 1) are
// std::bool_constant, so a channel's loop has no tests.
// tick(c, i) before each four whole vectors from i (the prefetches of the rho pass).
template <class Step, class Tick>
SAM_FUSED_SIMD_INLINE void each_run_in_order(int64_t c0, int64_t c1, int64_t n, Step&& step, Tick&& tick) {
  const int64_t whole = n / N * N;
  for (int64_t c = c0; c < c1; ++c) {
    auto sweep = [&](auto first, auto last) __attribute__((always_inline)) {
      int64_t i = 0;
      for (; i + 4 * N <= whole; i += 4 * N) {
        tick(c, i);
        step(c, first, last, i, Lanes<true>{N});
        step(c, first, last, i + N, Lanes<true>{N});
        step(c, first, last, i + 2 * N, Lanes<true>{N});
        step(c, first, last, i + 3 * N, Lanes<true>{N});
      }
      for (; i < whole; i += N) step(c, first, last, i, Lanes<true>{N});
      if (i < n) step(c, first, last, i, Lanes<false>{n - i});
    };
    using Yes = std::true_type;
    using No = std::false_type;
    const bool first = c - c0 < 2, last = c == c1 - 1;
    if (first && last) sweep(Yes{}, Yes{});
    else if (first) sweep(Yes{}, No{});
    else if (last) sweep(No{}, Yes{});
    else sweep(No{}, No{});
  }
}

template <class Step> SAM_FUSED_SIMD_INLINE void each_run_in_order(int64_t c0, int64_t c1, int64_t n, Step&& step) {
  each_run_in_order(c0, c1, n, step, [](int64_t, int64_t) __attribute__((always_inline)) {});
}

// pool's sums (the same chains, each in channel order: the same bits) one channel at a time,
// each run front to back (each_run_in_order), the chains' sums waiting in L1 rows: one
// sequential stream. From memory, pool_blocked's 16 interleaved runs took 1.3-1.4x as long as
// this order in the forward at 576- and 1152-byte runs (16 and 32 rows of 9), 2.4x in a bare-loop
// version of the pool pass, though the same from L3. At 2304-byte runs (64 rows) the blocks
// measured as fast, in fewer instructions (a load and a store of the sums per vector fewer), so
// they keep runs of kInOrderPoolMaxBytes or more (docs/cpu-results.md).
template <bool kMax, class S> void pool_in_order(const S* x, int64_t C, int64_t stride, int64_t n, float* out) {
  const R init = kMax ? V::set1(-std::numeric_limits<float>::infinity()) : V::zero();
  SmallBuffer<float, 4096> sums(2 * n);  // chain a (even channels), then chain b (odd)
  float* const sa = sums.get();
  float* const sb = sa + n;
  each_run_in_order(
      0, C, n, [&](int64_t c, auto first, auto last, int64_t i, auto lanes) __attribute__((always_inline)) {
        const bool odd = c & 1;
        float* const own = odd ? sb : sa;
        const R acc =
            pool_op<kMax>(decltype(first)::value ? init : lanes.load(own + i), lanes.load(x + c * stride + i));
        if constexpr (!decltype(last)::value) lanes.store(own + i, acc);
        else if (odd) lanes.store(out + i, pool_op<kMax>(lanes.load(sa + i), acc));
        else if (c > 0) lanes.store(out + i, pool_op<kMax>(acc, lanes.load(sb + i)));
        else lanes.store(out + i, pool_op<kMax>(acc, init));  // one channel
      });
}

constexpr int64_t kInOrderPoolMaxBytes = 2048;

// From memory, runs from kInOrderBytes to kInOrderPoolMaxBytes: pool_in_order. Other runs of two
// groups of 4 vectors or more over more than one block of channels: pool_blocked (a shorter run is
// read nearly front to back by pool, in fewer instructions).
template <bool kMax, class S>
void pool_any(const S* x, int64_t C, int64_t stride, int64_t n, float* out, bool from_memory) {
  if (from_memory && runs_in_order<S>(C, n) && n * int64_t(sizeof(S)) < kInOrderPoolMaxBytes)
    pool_in_order<kMax>(x, C, stride, n, out);
  else if (n >= 8 * N && C > kPoolBlock) pool_blocked<kMax>(x, C, stride, n, out);
  else pool<kMax>(x, C, stride, n, out);
}
// The mean's channel sums in runs of kPoolRun channels, each run summed by pool_any (two float
// chains) and added in double, rounded to float once: one pair of chains over all of C put a
// relative error that grows with C into the mean (1.5e-5 at 2072 channels of one value, against
// eager fp32's 4e-7; the tests' fp32 tolerance is 1e-5), as rho's runs of kRhoRun avoid for rho.
// The run's float sums wait in `out`; a run costs a load, a store and the double adds per pixel.
constexpr int64_t kPoolRun = 64;
template <class S> void pool_sum(const S* x, int64_t C, int64_t stride, int64_t n, float* out, bool from_memory) {
  if (C <= kPoolRun) return pool_any<false>(x, C, stride, n, out, from_memory);
  SmallBuffer<double, 2048> total(n);
  double* const t = total.get();
  pool_any<false>(x, kPoolRun, stride, n, out, from_memory);
  for (int64_t i = 0; i < n; ++i) t[i] = double(out[i]);
  for (int64_t c0 = kPoolRun; c0 < C; c0 += kPoolRun) {
    pool_any<false>(x + c0 * stride, std::min(kPoolRun, C - c0), stride, n, out, from_memory);
    int64_t i = 0;
    for (; i + N <= n; i += N) V::add_to_double(t + i, V::load(out + i));
    if (i < n) V::add_to_double_k(t + i, V::load_k(out + i, n - i), n - i);
  }
  for (int64_t i = 0; i < n; ++i) out[i] = float(t[i]);
}
template <class S> void pool_max(const S* x, int64_t C, int64_t stride, int64_t n, float* out, bool from_memory) {
  pool_any<true>(x, C, stride, n, out, from_memory);
}

// rho's sums (the same chains, in the same order: the same bits) over runs_in_order; rho[0, n)
// must be zero.
// kFetch: ahead has regions to fetch (without, the loop has no checks for them).
template <bool kFetch, class S>
void rho_in_order(const S* g, const S* x, int64_t C, int64_t stride, int64_t n, double* rho, SpreadPrefetch& ahead) {
  SmallBuffer<float, 4096> sums(2 * n);  // chain a (even channels of a run of kRhoRun), then chain b (odd)
  float* const sa = sums.get();
  float* const sb = sa + n;
  for (int64_t c0 = 0; c0 < C; c0 += kRhoRun) {
    const int64_t c1 = std::min(C, c0 + kRhoRun);
    each_run_in_order(
        c0, c1, n,
        [&](int64_t c, auto first, auto last, int64_t i, auto lanes) __attribute__((always_inline)) {
          const bool odd = (c - c0) & 1;
          float* const own = odd ? sb : sa;
          const R acc = V::fmadd(lanes.load(g + c * stride + i), lanes.load(x + c * stride + i),
                                 decltype(first)::value ? V::zero() : lanes.load(own + i));
          if constexpr (!decltype(last)::value) lanes.store(own + i, acc);
          else if (odd) lanes.add_to_double(rho + i, V::add(lanes.load(sa + i), acc));
          else if (c > c0) lanes.add_to_double(rho + i, V::add(acc, lanes.load(sb + i)));
          else lanes.add_to_double(rho + i, V::add(acc, V::zero()));  // a run of one channel
        },
        [&](int64_t c, int64_t i) __attribute__((always_inline)) {
          if constexpr (kFetch) ahead.at(c * n + i);
        });
  }
}

// 4-lane vectors (SSE2) spend four times the loop instructions per byte of 16-lane ones; there
// the backward's prefetches in its sequential passes (rho over runs in order, dx in blocks) cost
// more than they gained: 5-6% slower from memory at 16 and 64 rows than none, while the group
// passes over short strided runs still need them (1.7x faster at 8 rows; docs/cpu-results.md).
constexpr bool kFetchInSequentialPasses = N >= 8;

// Within a run, even and odd channels take two chains (added before the run goes to double):
// half the rounding of one chain, and two independent dependency chains. Four channels per
// iteration of the channel loop, as in pool; from memory, runs of kInOrderBytes or more in memory
// order instead (rho_in_order). The regions of pf (the next band's x, from the backward) are fetched in
// step with the reads, so that the backward's memory traffic is split between its two passes:
// bare loops with x and g both fetched during the dx pass were slower than none, and 1.1-1.25x
// faster with x fetched here and g there (docs/cpu-results.md).
template <class S>
void rho(const S* g, const S* x, int64_t C, int64_t stride, int64_t n, double* rho, bool from_memory,
         const PrefetchRuns* pf, int npf) {
  for (int64_t i = 0; i < n; ++i) rho[i] = 0.0;
  const bool in_order = from_memory && runs_in_order<S>(C, n);
  SpreadPrefetch ahead(pf, in_order && !kFetchInSequentialPasses ? 0 : npf, C, C * n);
  if (in_order) {
    if (ahead.active()) rho_in_order<true>(g, x, C, stride, n, rho, ahead);
    else rho_in_order<false>(g, x, C, stride, n, rho, ahead);
    return ahead.finish();
  }
  int64_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    for (int64_t c0 = 0; c0 < C; c0 += kRhoRun) {
      ahead.at(i * C + c0 * 4 * N);  // this pass's elements read so far
      R a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
      R b0 = V::zero(), b1 = V::zero(), b2 = V::zero(), b3 = V::zero();
      const int64_t c1 = std::min(C, c0 + kRhoRun);
      const S* gp = g + c0 * stride + i;
      const S* xp = x + c0 * stride + i;
      int64_t c = c0;
      for (; c + 4 <= c1; c += 4, gp += 4 * stride, xp += 4 * stride) {
        fma4(a0, a1, a2, a3, gp, xp);
        fma4(b0, b1, b2, b3, gp + stride, xp + stride);
        fma4(a0, a1, a2, a3, gp + 2 * stride, xp + 2 * stride);
        fma4(b0, b1, b2, b3, gp + 3 * stride, xp + 3 * stride);
      }
      if (c + 2 <= c1) {
        fma4(a0, a1, a2, a3, gp, xp);
        fma4(b0, b1, b2, b3, gp + stride, xp + stride);
        c += 2;
        gp += 2 * stride;
        xp += 2 * stride;
      }
      if (c < c1) fma4(a0, a1, a2, a3, gp, xp);
      V::add_to_double(rho + i, V::add(a0, b0));
      V::add_to_double(rho + i + N, V::add(a1, b1));
      V::add_to_double(rho + i + 2 * N, V::add(a2, b2));
      V::add_to_double(rho + i + 3 * N, V::add(a3, b3));
    }
  }
  for (; i < n; i += N) {
    const int64_t k = std::min(N, n - i);
    for (int64_t c0 = 0; c0 < C; c0 += kRhoRun) {
      ahead.at(i * C + c0 * k);
      R a = V::zero(), b = V::zero();
      const int64_t c1 = std::min(C, c0 + kRhoRun), c2 = c0 + ((c1 - c0) & ~int64_t(1));
      int64_t c = c0;
      for (; c < c2; c += 2) {
        a = V::fmadd(V::load_k(g + c * stride + i, k), V::load_k(x + c * stride + i, k), a);
        b = V::fmadd(V::load_k(g + (c + 1) * stride + i, k), V::load_k(x + (c + 1) * stride + i, k), b);
      }
      if (c2 < c1) a = V::fmadd(V::load_k(g + c * stride + i, k), V::load_k(x + c * stride + i, k), a);
      V::add_to_double_k(rho + i, V::add(a, b), k);
    }
  }
  ahead.finish();
}

// The per-pixel operands of dx, shared by every channel (only those of the terms present are loaded).
struct DxPixel {
  R s, add, route;
  typename V::RI am;
};

// dx of one channel's k lanes at off from its pixels' operands p: g*s + add, plus route where the
// argmax is this channel. The same operations in either loop order.
template <bool kG, bool kAdd, bool kRoute, class S>
SAM_FUSED_SIMD_INLINE R dx_value(const S* g, int64_t c, int64_t off, const DxPixel& p, int64_t k) {
  R v;
  if constexpr (kG && kAdd) v = V::fmadd(V::load_k(g + off, k), p.s, p.add);
  else if constexpr (kG) v = V::mul(V::load_k(g + off, k), p.s);
  else if constexpr (kAdd) v = p.add;
  else v = V::zero();
  if constexpr (kRoute) v = V::route(v, p.am, int32_t(c), p.route);
  return v;
}

// Streamed, channel runs front to back, as scale; the max pool's routing keeps the blocks where
// the lines line up (the flat path cannot track a lane's channel), and so do 4-lane vectors
// (SSE2), where the per-vector work of the channel-run loop cost the backward 12-32%.
template <bool kG, bool kAdd, bool kRoute, class S>
void dx_terms(S* dx, const S* g, const float* s, const float* add, const int32_t* am, const float* route, int64_t C,
              int64_t stride, int64_t n, bool stream, const PrefetchRuns* pf, int npf) {
  auto pixel = [&](const float* s_row, const float* add_row, int64_t i, int64_t k) __attribute__((always_inline)) {
    DxPixel p{};
    if constexpr (kG) p.s = V::load_k(s_row + i, k);
    if constexpr (kAdd) p.add = V::load_k(add_row + i, k);
    if constexpr (kRoute) {
      p.am = V::loadi_k(am + i, k);
      p.route = V::load_k(route + i, k);
    }
    return p;
  };
  if (!stream || ((kRoute || N < 8) && lines_aligned_across_channels<S>(stride)))
    return write_blocked(
        dx, C, stride, n, stream, pf, kFetchInSequentialPasses ? npf : 0,
        [&](int64_t i, int64_t k) __attribute__((always_inline)) { return pixel(s, add, i, k); },
        [&](int64_t c, int64_t off, const DxPixel& p, int64_t k)
            __attribute__((always_inline)) { return dx_value<kG, kAdd, kRoute>(g, c, off, p, k); });
  // The routing compares each lane's channel, which the flat path does not track.
  const bool flat = !kRoute && flat_runs(stride, n, stream);
  const auto s_ext = flat && kG ? extend_row<S>(s, n) : nullptr;
  const auto add_ext = flat && kAdd ? extend_row<S>(add, n) : nullptr;
  const float* sr = s_ext ? s_ext.get() : s;
  const float* ar = add_ext ? add_ext.get() : add;
  write_channels(dx, C, stride, n, flat, stream, pf, npf,
                 [&](int64_t c, int64_t off, int64_t i, int64_t k) __attribute__((always_inline)) {
                   return dx_value<kG, kAdd, kRoute>(g, c, off, pixel(sr, ar, i, k), k);
                 });
}

template <class S>
void dx(S* out, const S* g, const float* s, const float* add, const int32_t* am, const float* route, int64_t C,
        int64_t stride, int64_t n, bool stream, const PrefetchRuns* pf, int npf) {
  using Fn = decltype(&dx_terms<true, true, true, S>);
  static constexpr Fn kByTerms[8] = {dx_terms<false, false, false, S>, dx_terms<false, false, true, S>,
                                     dx_terms<false, true, false, S>,  dx_terms<false, true, true, S>,
                                     dx_terms<true, false, false, S>,  dx_terms<true, false, true, S>,
                                     dx_terms<true, true, false, S>,   dx_terms<true, true, true, S>};
  kByTerms[(g ? 4 : 0) + (add ? 2 : 0) + (am ? 1 : 0)](out, g, s, add, am, route, C, stride, n, stream, pf, npf);
}

#include "kernels_f32_nhwc_impl.h"

}  // namespace

template <class S> constexpr NchwKernels<S> kNchw{pool_sum<S>, pool_max<S>, scale<S>, rho<S>, dx<S>, argmax<S>};
template <class S>
constexpr NhwcKernels<S> kNhwc{pool_sum_nhwc<S>, pool_max_nhwc<S>, scale_nhwc<S>,
                               rho_nhwc<S>,      dx_nhwc<S>,       argmax_nhwc<S>};

template <class S> constexpr PointwiseKernels<S> kPointwise{pointwise_fwd<S>, pointwise_bwd<S>};

// clang-format off
const F32Kernels kTable{pool_sum<float>, pool_max<float>, scale<float>, conv_sigmoid, conv_backward, rho<float>,
                        dx<float>, argmax<float>,
                        pool_sum_nhwc<float>, pool_max_nhwc<float>, scale_nhwc<float>, rho_nhwc<float>,
                        dx_nhwc<float>, argmax_nhwc<float>,
                        kNchw<c10::Half>, kNchw<c10::BFloat16>, kNhwc<c10::Half>, kNhwc<c10::BFloat16>,
                        kPointwise<float>, kPointwise<c10::Half>, kPointwise<c10::BFloat16>, kPointwise<double>};
// clang-format on

}  // namespace sam_fused::cpu::SAM_FUSED_ISA_NS
