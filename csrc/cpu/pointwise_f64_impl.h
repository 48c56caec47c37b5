// The point-wise op in fp64 (PointwiseKernels<double>), part of kernels_f32_impl.h's ISA region.
// GCC/Clang vector extensions of kF64Bytes: the region's target makes them its registers (2
// doubles on SSE2, 4 on AVX2, 8 on AVX-512), and a * b + c becomes an FMA where the ISA has one,
// as fmadd does in the float loops. exp is our own (exp_minus_f64), so the loops need neither
// libm nor at::vec (built without an ISA here, its exp ran element by element: 2-3x slower than
// eager).

constexpr int64_t kF64Bytes = sizeof(R) < 16 ? 8 : int64_t(sizeof(R));
constexpr int64_t ND = kF64Bytes / 8;  // doubles a vector
using D = double __attribute__((vector_size(kF64Bytes)));
using DMask = int64_t __attribute__((vector_size(kF64Bytes)));  // a comparison's lanes: all ones or zero

SAM_FUSED_SIMD_INLINE D d_set1(double v) { return D{} + v; }
SAM_FUSED_SIMD_INLINE D d_select(DMask m, D a, D b) { return (D)((m & (DMask)a) | (~m & (DMask)b)); }
SAM_FUSED_SIMD_INLINE D d_load(const double* p) {
  D v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
SAM_FUSED_SIMD_INLINE void d_store(double* p, D v) { std::memcpy(p, &v, sizeof v); }

// exp_minus's range in double: exp(t) for t in it is a normal double (2^n with n in [-1022, 1023]).
constexpr double kExpLowestF64 = -708.0, kExpHighestF64 = 709.0;

// 1 / k! for k <= 13, each correctly rounded (computed at compile time).
struct InvFactorials {
  double v[14];
};
constexpr InvFactorials inv_factorials() {
  InvFactorials f{};
  double factorial = 1.0;  // exact up to 13! < 2^53
  for (int k = 0; k < 14; ++k) factorial *= k > 0 ? k : 1, f.v[k] = 1.0 / factorial;
  return f;
}
constexpr InvFactorials kInvFactorials = inv_factorials();

// exp(-a): inf where -a > 709 and 0 where -a < -708 (exp(-a) is then past 8e307 or below 3.3e-308:
// the sigmoid is 0 or 1 to double precision, and its slope 0, as exp_minus gives in float), NaN
// kept. Inside: t = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, the first exact times any
// n here), e^r by its Taylor series to r^13 (the next term is below 1e-17 relative), times 2^n
// built in the exponent bits. n comes from the low bits of t / ln2 + 1.5 * 2^52, which rounds it.
SAM_FUSED_SIMD_INLINE D exp_minus_f64(D a) {
  constexpr double kLog2e = 1.4426950408889634, kLn2Hi = 6.93147180369123816490e-01,
                   kLn2Lo = 1.90821492927058770002e-10, kRound = 0x1.8p52;
  const D t = -a, lo = d_set1(kExpLowestF64), hi = d_set1(kExpHighestF64);
  const D c = d_select(t < lo, lo, d_select(t > hi, hi, t));  // NaN: both tests false
  const D m = c * kLog2e + kRound, n = m - kRound;
  const D r = (c - n * kLn2Hi) - n * kLn2Lo;
  D p = d_set1(kInvFactorials.v[13]);
#pragma GCC unroll 13
  for (int k = 12; k >= 0; --k) p = p * r + kInvFactorials.v[k];
  const D two_n = (D)(((DMask)m - (DMask)d_set1(kRound) + 1023) << 52);
  const D e = p * two_n;
  return d_select(t > hi, d_set1(std::numeric_limits<double>::infinity()), d_select(t < lo, D{}, e));
}

// f(k, u) for groups of U vectors from element k (u: std::integral_constant<int, U>), then single
// vectors; returns the elements done (the caller finishes the last n % ND through tail_f64).
template <int U, class F> SAM_FUSED_SIMD_INLINE int64_t each_f64_group(int64_t n, F&& f) {
  int64_t k = 0;
  for (; k + U * ND <= n; k += U * ND) f(k, std::integral_constant<int, U>{});
  for (; k + ND <= n; k += ND) f(k, std::integral_constant<int, 1>{});
  return k;
}

// The last n < ND elements of each input run through one vector's f in zero-padded copies; the
// first n lanes of each output are written back.
template <int IN, int OUT, class F>
SAM_FUSED_SIMD_INLINE void tail_f64(int64_t n, const double* const (&in)[IN], double* const (&out)[OUT], F&& f) {
  if (n <= 0) return;
  double a[IN][ND] = {}, b[OUT][ND];
  for (int i = 0; i < IN; ++i) std::memcpy(a[i], in[i], n * sizeof(double));
  f(a, b);
  for (int i = 0; i < OUT; ++i) std::memcpy(out[i], b[i], n * sizeof(double));
}

void pointwise_fwd_f64(const double* x, const double* y, double* out, int64_t n) {
  const auto vectors = [](const double* x, const double* y, double* out, auto u) __attribute__((always_inline)) {
    constexpr int U = decltype(u)::value;
    D e[U];
#pragma GCC unroll 8
    for (int j = 0; j < U; ++j) e[j] = exp_minus_f64(d_load(y + j * ND));
#pragma GCC unroll 8
    for (int j = 0; j < U; ++j) d_store(out + j * ND, d_load(x + j * ND) * (1.0 / (1.0 + e[j])));
  };
  const int64_t k = each_f64_group<kPointwiseGroup>(n, [&](int64_t k, auto u) { vectors(x + k, y + k, out + k, u); });
  tail_f64<2, 1>(n - k, {x + k, y + k}, {out + k},
                 [&](auto& a, auto& b) { vectors(a[0], a[1], b[0], std::integral_constant<int, 1>{}); });
}

// The slope as sigmoid_slope_of_exp takes it in float: s * min(e * s, 1).
void pointwise_bwd_f64(const double* g, const double* x, const double* y, double* dx, double* dy, int64_t n) {
  const auto vectors = [](const double* g, const double* x, const double* y, double* dx, double* dy,
                          auto u) __attribute__((always_inline)) {
    constexpr int U = decltype(u)::value;
    D e[U], s[U];
#pragma GCC unroll 8
    for (int j = 0; j < U; ++j) e[j] = exp_minus_f64(d_load(y + j * ND));
#pragma GCC unroll 8
    for (int j = 0; j < U; ++j) s[j] = 1.0 / (1.0 + e[j]);
#pragma GCC unroll 8
    for (int j = 0; j < U; ++j) {
      const D gv = d_load(g + j * ND), es = e[j] * s[j];
      d_store(dx + j * ND, gv * s[j]);
      d_store(dy + j * ND, (gv * d_load(x + j * ND)) * (s[j] * d_select(es < d_set1(1.0), es, d_set1(1.0))));
    }
  };
  const int64_t k =
      each_f64_group<kPointwiseGroup>(n, [&](int64_t k, auto u) { vectors(g + k, x + k, y + k, dx + k, dy + k, u); });
  tail_f64<3, 2>(n - k, {g + k, x + k, y + k}, {dx + k, dy + k},
                 [&](auto& a, auto& b) { vectors(a[0], a[1], a[2], b[0], b[1], std::integral_constant<int, 1>{}); });
}
