// This ISA's double lanes for the point-wise op's fp64 loops (kernels_f32_impl.h, in its ISA
// region): VecF64 gives pointwise_fwd/pointwise_bwd the calls they make on V, and exp_minus an
// overload for them. GCC/Clang vector extensions of kF64Bytes: the region's target makes them its
// registers (2 doubles on SSE2, 4 on AVX2, 8 on AVX-512), and a * b + c becomes an FMA where the
// ISA has one, as fmadd does in the float loops. The exp is our own, so nothing needs at::vec
// (built without an ISA here, its exp ran element by element: 2-3x slower than eager).

constexpr int64_t kF64Bytes = sizeof(R) < 16 ? 8 : int64_t(sizeof(R));
constexpr int64_t ND = kF64Bytes / 8;  // doubles a vector
using D = double __attribute__((vector_size(kF64Bytes)));
using DMask = int64_t __attribute__((vector_size(kF64Bytes)));  // a comparison's lanes: all ones or zero

SAM_FUSED_SIMD_INLINE D d_select(DMask m, D a, D b) { return (D)((m & (DMask)a) | (~m & (DMask)b)); }

struct VecF64 {
  using R = D;
  static constexpr int64_t N = ND;
  static SAM_FUSED_SIMD_INLINE R set1(double v) { return D{} + v; }
  static SAM_FUSED_SIMD_INLINE R load(const double* p) { return load_k(p, N); }
  static SAM_FUSED_SIMD_INLINE R load_k(const double* p, int64_t k) {  // lanes from k on: 0
    D v{};
    std::memcpy(&v, p, k * sizeof(double));
    return v;
  }
  static SAM_FUSED_SIMD_INLINE void store(double* p, R v) { store_k(p, v, N); }
  static SAM_FUSED_SIMD_INLINE void store_k(double* p, R v, int64_t k) { std::memcpy(p, &v, k * sizeof(double)); }
  static SAM_FUSED_SIMD_INLINE R add(R a, R b) { return a + b; }
  static SAM_FUSED_SIMD_INLINE R mul(R a, R b) { return a * b; }
  static SAM_FUSED_SIMD_INLINE R div(R a, R b) { return a / b; }
  static SAM_FUSED_SIMD_INLINE R min(R a, R b) { return d_select(a < b, a, b); }  // b where either is NaN, as minps
};

// exp_minus's range in double: exp(t) for t in it is a normal double (2^n with n in [-1021, 1024],
// built as 2 * 2^(n - 1)). Its top is the largest double whose exp is finite (709.782712893384):
// below it the sigmoid is a subnormal double, not 0.
constexpr double kExpLowestF64 = -708.0, kExpHighestF64 = 0x1.62e42fefa39efp+9;

// 2 / k! for k <= 13, each correctly rounded (computed at compile time): e^r's Taylor series times
// 2, which exp_minus's 2^(n - 1) takes back (every step of Horner's scheme scales exactly).
struct TwoOverFactorials {
  double v[14];
};
constexpr TwoOverFactorials two_over_factorials() {
  TwoOverFactorials f{};
  double factorial = 1.0;  // exact up to 13! < 2^53
  for (int k = 0; k < 14; ++k) factorial *= k > 0 ? k : 1, f.v[k] = 2.0 / factorial;
  return f;
}
constexpr TwoOverFactorials kTwoOverFactorials = two_over_factorials();

// exp(-a): inf where -a > 709.78 and 0 where -a < -708 (exp(-a) then overflows, as double's own
// exp does, or is below 3.3e-308: the sigmoid is 1 to double precision, and its slope 0, as
// exp_minus gives in float), NaN kept. Inside: t = n ln2 + r with |r| <= ln2 / 2 (ln2 in two
// parts, the first exact times any n here), 2 e^r by its Taylor series to r^13 (the next term is
// below 1e-17 relative), times 2^(n - 1) built in the exponent bits (2^1024 is no double). n comes
// from the low bits of t / ln2 + 1.5 * 2^52, which rounds it.
SAM_FUSED_SIMD_INLINE D exp_minus(D a) {
  constexpr double kLog2e = 1.4426950408889634, kLn2Hi = 6.93147180369123816490e-01,
                   kLn2Lo = 1.90821492927058770002e-10, kRound = 0x1.8p52;
  const D t = -a, lo = VecF64::set1(kExpLowestF64), hi = VecF64::set1(kExpHighestF64);
  const D c = d_select(t < lo, lo, d_select(t > hi, hi, t));  // NaN: both tests false
  const D m = c * kLog2e + kRound, n = m - kRound;
  const D r = (c - n * kLn2Hi) - n * kLn2Lo;
  D p = VecF64::set1(kTwoOverFactorials.v[13]);
#pragma GCC unroll 13
  for (int k = 12; k >= 0; --k) p = p * r + kTwoOverFactorials.v[k];
  const D two_n1 = (D)(((DMask)m - (DMask)VecF64::set1(kRound) + 1022) << 52);  // 2^(n - 1)
  const D e = p * two_n1;
  return d_select(t > hi, VecF64::set1(std::numeric_limits<double>::infinity()), d_select(t < lo, D{}, e));
}
