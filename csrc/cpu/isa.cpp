// Run-time ISA choice and cache sizes of the CPU kernels (isa.h), and two introspection ops
// for benchmarks and tests: sam_fused::_cpu_isa() -> the ISA the next CPU call uses, and
// sam_fused::_cpu_cache_sizes() -> [L1d, L2, L3] bytes the kernels plan with (L2: SAM_FUSED_CPU_L2
// where set, read once).
#include "isa.h"

#include <c10/util/Exception.h>
#include <torch/library.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "kernels_f32.h"
#include "simd.h"

namespace sam_fused::cpu {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    default:
      return "default";
  }
}

bool cpu_supports(Isa isa) {
  if (isa == Isa::kDefault) return true;
#if defined(SAM_FUSED_X86_DISPATCH)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (isa == Isa::kAvx2) return avx2;
  return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

Isa active_isa() {
  const char* forced = std::getenv("SAM_FUSED_CPU_ISA");
  if (forced && *forced) {
    const std::string_view name(forced);
    for (Isa isa : {Isa::kDefault, Isa::kAvx2, Isa::kAvx512})
      if (name == isa_name(isa)) {
        TORCH_CHECK_VALUE(cpu_supports(isa), "SAM_FUSED_CPU_ISA=", name,
                          ": this CPU (or this build of sam_fused) does not support it; unset the variable or "
                          "choose one of the instruction sets it has");
        return isa;
      }
    TORCH_CHECK_VALUE(false, "SAM_FUSED_CPU_ISA must be default, avx2 or avx512, got '", name, "'");
  }
  if (cpu_supports(Isa::kAvx512)) return Isa::kAvx512;
  if (cpu_supports(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kDefault;
}

const F32Kernels& f32_kernels() {
  const F32Kernels* table = nullptr;
  switch (active_isa()) {
    case Isa::kAvx512:
      table = f32_kernels_avx512();
      break;
    case Isa::kAvx2:
      table = f32_kernels_avx2();
      break;
    default:
      break;
  }
  if (table) return *table;
#if defined(SAM_FUSED_HAVE_F16C_PATH)
  // Baseline x86-64 converts fp16 without F16C, several times the instructions of F16C's
  // conversions; on a CPU with F16C (run on the default ISA by choice, or lacking AVX2/FMA) the
  // portable loops, which use F16C, run fp16 instead (null fp16 entries).
  static const F32Kernels default_without_f16 = [] {
    F32Kernels t = *f32_kernels_default();
    t.f16 = {};
    t.f16_nhwc = {};
    return t;
  }();
  if (cpu_has_f16c()) return default_without_f16;
#endif
  return *f32_kernels_default();
}

namespace {

// "48K", "1024K", "32M" from /sys/devices/system/cpu/cpu0/cache/index*/size.
int64_t parse_size(const std::string& text) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (v <= 0) return 0;
  const char unit = end ? *end : '\0';
  return v * (unit == 'K' ? 1024LL : unit == 'M' ? 1024LL * 1024 : unit == 'G' ? 1024LL * 1024 * 1024 : 1);
}

std::string read_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

CacheSizes probe_caches() {
  // Conservative where the system says nothing: small enough for any CPU of the last decade.
  CacheSizes c{32 * 1024, 256 * 1024, 0, false};
  int64_t found[4] = {0, 0, 0, 0};
  for (int i = 0; i < 8; ++i) {  // Linux: the cache hierarchy of cpu0
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    const std::string level = read_line(dir + "level"), type = read_line(dir + "type");
    if (level.empty()) break;
    const int lv = std::atoi(level.c_str());
    if (lv >= 1 && lv <= 3 && type != "Instruction") found[lv] = parse_size(read_line(dir + "size"));
  }
#if defined(_SC_LEVEL2_CACHE_SIZE)
  if (found[1] <= 0) found[1] = sysconf(_SC_LEVEL1_DCACHE_SIZE);
  if (found[2] <= 0) found[2] = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (found[3] <= 0) found[3] = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
  if (found[1] > 0) c.l1d = found[1];
  if (found[2] > 0) {
    c.l2 = found[2];
    c.reported = true;
  }
  if (found[3] > 0) c.l3 = found[3];
  // SAM_FUSED_CPU_L2 plans for another CPU's L2 (its bands, hence its loops and prefetch walks):
  // what tests and instruction counts use to cover every plan on one machine.
  if (const char* forced = std::getenv("SAM_FUSED_CPU_L2")) {
    const int64_t l2 = parse_size(forced);
    TORCH_CHECK_VALUE(
        l2 >= 4096 && std::string_view(forced).find_first_not_of("0123456789KMG") == std::string_view::npos,
        "SAM_FUSED_CPU_L2 must be a size of at least 4096 bytes such as 524288, 512K or 1M, got '", forced,
        "' (unset it to use the size the CPU reports)");
    c.l2 = l2;
  }
  return c;
}

}  // namespace

const CacheSizes& cache_sizes() {
  static const CacheSizes sizes = probe_caches();
  return sizes;
}

}  // namespace sam_fused::cpu

TORCH_LIBRARY_FRAGMENT(sam_fused, m) {
  m.def("_cpu_isa() -> str", [] { return std::string(sam_fused::cpu::isa_name(sam_fused::cpu::active_isa())); });
  m.def("_cpu_cache_sizes() -> int[]", [] {
    const auto& c = sam_fused::cpu::cache_sizes();
    return std::vector<int64_t>{c.l1d, c.l2, c.l3};
  });
}
