// Test-only CPU build of the CUDA block programs (docs/design.md §8): the same kernel source and
// launch plan as csrc/cuda/spatial_attention_cuda.cu, run block by block, phase by phase,
// thread by thread through CpuCtx, which records every global access.
//
//   sam_fused::_emulate_fwd(x, weight, bias, pool, return_map, variant, rows, threads, index64,
//                           max_blocks, arch, sanitize) -> (out, pooled, traffic)
//   sam_fused::_emulate_bwd(grad_out, x, weight, bias, pooled, pool, return_map, variant, rows,
//                           threads, index64, max_blocks, arch, sanitize) -> (grad_x, grad_weight, grad_bias, traffic)
//   sam_fused::_emulate_pointwise_fwd(x, y, max_blocks, sanitize) -> (out, traffic)
//   sam_fused::_emulate_pointwise_bwd(grad, x, y, max_blocks, sanitize) -> (grad_x, grad_y, traffic)
//   sam_fused::_emulate_planted_bug(bug) -> out
//   sam_fused::_emulate_plan(shape, dtype, pool, kh, kw, channels_last, return_map, backward, variant,
//                            rows, threads, arch) -> (plan, index64)
//
// variant: 0 = the CUDA op's choice, 1 = one pass, 2 = two pass, 3 / 4 = one pass with / without
// the backward's x tile staged (Plan::staged_x), 5 = one pass with the staged tile copied as one
// chunk (Plan::chunks = 1); rows/threads: 0 = the CUDA
// op's choice; index64: force 64-bit offsets; max_blocks > 0 runs only the first max_blocks
// blocks of each launch (outputs then incomplete: for access-pattern reports on big shapes);
// arch: the device limits to plan for and enforce (limits.h table: sm_80 ... sm_120; default
// sm_90, an H100). Launches that exceed them raise as the CUDA launcher would. sanitize: run
// with a BlockSanitizer (sanitizer_cpu.h: race, bounds, init and barrier checks; the first
// violation raises RuntimeError "block sanitizer: <kind>: ..."). _emulate_planted_bug runs a
// tiny block program with one planted bug of each sanitizer kind (see planted_bug), or none
// ("clean"), with the sanitizer on: the proof that each check fires.
// traffic: int64 [kSlots + launches, kPlanColumns]; row k < kSlots is tensor slot k (TensorSlot: x,
// grad_out, out/grad_x, pooled, weight, bias, workspace, shared memory) with columns
// TrafficRecorder::Field (bytes read, unique bytes read, bytes written, unique bytes written,
// 32-byte sectors touched by warp-wide accesses, ideal sectors; for shared memory: bank
// wavefronts and the ideal, of the staged-tile accesses, no unique bytes) padded with 0s; then one plan row per launch,
// in launch order (see plan_rows). Unique bytes restart at each kernel launch. _emulate_plan plans a call of that shape
// without data and returns only the plan rows, and whether offsets are 64-bit. The point-wise
// ops (csrc/block/pointwise.h, run_pointwise.h) run the point-wise block programs the same way
// (max_blocks, sanitize as above); their traffic has kPwSlots rows (PointwiseSlot: x, y, grad,
// out/grad_x, grad_y), then one plan row (pointwise_plan_row), none for an empty input.
#include <torch/library.h>

#include <algorithm>
#include <memory>

#include "../block/ctx_cpu.h"
#include "../block/run.h"
#include "../block/run_pointwise.h"

namespace sam_fused::block {
namespace {

struct alignas(16) uint4_words {
  uint32_t w[4];
};  // storage unit of the emulated shared memory

const DeviceLimits& arch_limits(const std::string& arch) {
  const DeviceLimits* l = find_arch_limits(arch.c_str());
  if (!l) {
    std::string names;
    for (const auto& k : kArchLimits) names += std::string(names.empty() ? "" : ", ") + k.name;
    TORCH_CHECK_VALUE(false, "arch must be one of ", names, ", got '", arch, "'");
  }
  return *l;
}

constexpr int kPlanColumns = 10;

// One row per launch: rows per tile, tiles per sample, grid, flags (1: two pass, 2: map
// buffers in global scratch, 4: the backward's x tile staged), vector width, threads per block, dynamic shared-memory
// bytes, pixels per channel-reduction round, rows per chunk of the staged tile (Plan::chunk_rows; 0: nothing staged),
// channel slots of the tile rows' vector sums (Plan::sum_slots; 0: no vector sums).
// The backward's map kernel (BwdMaps) reports its own map rows, tiles and spill flag, and 0 pixels per round (it
// reduces no channels).
std::vector<int64_t> plan_rows(const CallPlan& c) {
  std::vector<int64_t> v;
  const Plan& p = c.p;
  for (int i = 0; i < c.n_launches; ++i) {
    const Launch& l = c.launches[i];
    const bool maps = l.kernel == Kernel::kMaps;
    v.insert(v.end(),
             {maps ? p.maps.rows : p.rows, maps ? p.maps.tiles : p.tiles, l.grid,
              int64_t(p.two_pass) | int64_t(maps ? p.maps.spill : p.spill) << 1 | int64_t(!maps && p.staged_x) << 2,
              int64_t(p.vec), int64_t(l.threads), l.smem_bytes, maps ? 0 : int64_t(p.px),
              l.kernel == Kernel::kMain && p.staged ? p.chunk_rows : 0,
              l.kernel == Kernel::kMain ? int64_t(p.sum_slots) : 0});
  }
  return v;
}

// The bank audit _bank_audit runs (null: none): every emulated launch counts into it.
std::unique_ptr<BankAudit>& bank_audit() {
  static std::unique_ptr<BankAudit> audit;
  return audit;
}

struct CpuLauncher {
  TrafficRecorder rec{kSlots};
  CallPlan last_call;
  int64_t max_blocks = 0;
  DeviceLimits dev{};  // the point-wise ops plan without device limits
  std::unique_ptr<BlockSanitizer> san;  // null: no checks
  DeviceLimits limits() const { return dev; }
  void track(int slot, const at::Tensor& t, bool written = false) {
    rec.add_tensor(slot, t.data_ptr(), t.numel() * t.element_size());
    if (san) san->add_tensor(t.data_ptr(), t.numel() * t.element_size(), written);
  }
  // The weight and bias gradients, which the traffic counts leave out, for the sanitizer.
  template <typename T> void track_param_grads(const Args<T>& a) {
    if (a.dw) san->add_tensor(a.dw, a.s.taps() * int64_t(sizeof(T)), true);
    if (a.dbias) san->add_tensor(a.dbias, int64_t(sizeof(T)), true);
  }
  template <class A> void track_param_grads(const A&) {}
  template <class K, class A> void launch(const Launch& l, const A& a) {
    if (san) track_param_grads(a);
    rec.begin_launch();
    std::vector<uint4_words> smem(detail::ceil_div(l.smem_bytes, sizeof(uint4_words)) + 1);  // 16-byte aligned
    rec.set_shared(smem.data(), l.smem_bytes, kSlotShared);
    rec.set_audit(bank_audit().get());
    if (san) san->begin_launch(smem.data(), l.smem_bytes, smem.size() * sizeof(uint4_words), l.threads);
    for (int64_t blk = 0; blk < (max_blocks > 0 ? std::min(l.grid, max_blocks) : l.grid); ++blk) {
      if (san) san->begin_block(blk);
      CpuCtx ctx{blk, l.threads, reinterpret_cast<unsigned char*>(smem.data()), &rec, san.get()};
      K::run(ctx, a);
    }
  }
  // The counts of tensor slots [0, slots), then the plan rows.
  at::Tensor traffic(int slots, const std::vector<int64_t>& plan) const {
    std::vector<int64_t> v;
    const std::vector<int64_t>& counts = rec.counts();
    for (int slot = 0; slot < slots; ++slot) {
      v.insert(v.end(), counts.begin() + slot * TrafficRecorder::kFields,
               counts.begin() + (slot + 1) * TrafficRecorder::kFields);
      v.insert(v.end(), kPlanColumns - TrafficRecorder::kFields, 0);  // pad the row to the plan rows' width
    }
    v.insert(v.end(), plan.begin(), plan.end());
    return at::tensor(v, at::kLong).reshape({-1, kPlanColumns});
  }
  at::Tensor traffic() const { return traffic(kSlots, plan_rows(last_call)); }
};

// A launcher that runs the first max_blocks blocks of each launch (0: all), with a sanitizer or not.
CpuLauncher cpu_launcher(int64_t max_blocks, bool sanitize) {
  CpuLauncher L;
  L.max_blocks = max_blocks;
  if (sanitize) L.san = std::make_unique<BlockSanitizer>();
  return L;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> emulate_fwd(const at::Tensor& x, const at::Tensor& weight,
                                                           const std::optional<at::Tensor>& bias,
                                                           const std::string& pool, bool return_map, int64_t variant,
                                                           int64_t rows, int64_t threads, bool index64,
                                                           int64_t max_blocks, const std::string& arch, bool sanitize) {
  CpuLauncher L = cpu_launcher(max_blocks, sanitize);
  L.dev = arch_limits(arch);
  auto [out, pooled] =
      run_forward(L, x, weight, bias, pool, return_map, checked_overrides(variant, rows, threads), index64);
  return {out, pooled, L.traffic()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> emulate_bwd(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& pooled, const std::string& pool, bool return_map, int64_t variant, int64_t rows, int64_t threads,
    bool index64, int64_t max_blocks, const std::string& arch, bool sanitize) {
  CpuLauncher L = cpu_launcher(max_blocks, sanitize);
  L.dev = arch_limits(arch);
  auto [dx, dw, db] = run_backward(L, grad_out, x, weight, bias, pooled, pool, return_map,
                                   checked_overrides(variant, rows, threads), index64);
  return {dx, dw, db, L.traffic()};
}

// The plan of a call of this shape, without tensors: what run_forward / run_backward would plan
// and launch (pointers assumed 16-byte aligned, as fresh allocations are), checked the same way.
std::tuple<at::Tensor, bool> emulate_plan(at::IntArrayRef shape, at::ScalarType dtype, const std::string& pool,
                                          int64_t kh, int64_t kw, bool channels_last, bool return_map, bool backward,
                                          int64_t variant, int64_t rows, int64_t threads, const std::string& arch) {
  TORCH_CHECK_VALUE(shape.size() == 4 && std::all_of(shape.begin(), shape.end(), [](int64_t d) { return d >= 0; }),
                    "shape must be 4 non-negative sizes [B, C, H, W], got ", shape);
  TORCH_CHECK_VALUE(shape[1] >= 1, "shape must have at least one channel (C >= 1)");
  TORCH_CHECK_VALUE(kh >= 1 && kw >= 1 && kh % 2 == 1 && kw % 2 == 1, "kh and kw must be odd and positive, got ", kh,
                    "x", kw);
  TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
                    "dtype must be float32, float64, float16 or bfloat16, got ", dtype);
  const DeviceLimits& dev = arch_limits(arch);
  const Geometry g{shape[0], shape[1],         shape[2],      shape[3],  int(kh),
                   int(kw),  parse_pool(pool), channels_last, return_map};
  const int64_t elem = at::elementSize(dtype), acc = at::elementSize(acc_dtype(dtype));
  const CallPlan c = plan_call(g, dev, elem, acc, backward, true, checked_overrides(variant, rows, threads), false);
  for (int i = 0; i < c.n_launches; ++i) check_launch(dev, c.launches[i]);
  const std::vector<int64_t> v = plan_rows(c);
  return {at::tensor(v, at::kLong).reshape({-1, kPlanColumns}), c.index64};
}

// The point-wise op's plan as one row in plan_rows' columns: elements per block, 1, grid, 0,
// vector width, threads, 0 (no shared memory), 0 (no channel reduction), 0 (nothing staged),
// 0 (no vector sums); none when nothing was launched.
std::vector<int64_t> pointwise_plan_row(const PointwisePlan& p) {
  if (p.grid == 0) return {};
  return {p.block_elems, 1, p.grid, 0, int64_t(p.vec), int64_t(p.threads), 0, 0, 0, 0};
}

std::tuple<at::Tensor, at::Tensor> emulate_pointwise_fwd(const at::Tensor& x, const at::Tensor& y, int64_t max_blocks,
                                                         bool sanitize) {
  CpuLauncher L = cpu_launcher(max_blocks, sanitize);
  auto [out, plan] = run_pointwise_forward(L, x, y);
  return {out, L.traffic(kPwSlots, pointwise_plan_row(plan))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> emulate_pointwise_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                                     const at::Tensor& y, int64_t max_blocks,
                                                                     bool sanitize) {
  CpuLauncher L = cpu_launcher(max_blocks, sanitize);
  auto [dx, dy, plan] = run_pointwise_backward(L, grad, x, y);
  return {dx, dy, L.traffic(kPwSlots, pointwise_plan_row(plan))};
}

// A tiny block program (2 blocks of 64 threads, 64 floats of shared memory): thread t stages
// in[t], a barrier, then writes out[block * 64 + t] = buf[t] + buf[(t + 1) % 64]. Each bug
// breaks it the way a kernel could; the sanitizer must name that kind.
enum class Bug {
  kClean,
  kMissingBarrier,
  kSharedWriteWrite,
  kGlobalBlocks,
  kGlobalThreads,
  kSharedBounds,
  kGlobalBounds,
  kUninit,
  kDivergentBarrier,
  kBarrierInPhase,
  kCopyNotWaited,
  kChunkNotWaited,
  kGlobalUninit,
  kGlobalCrossBlock,
  kMisalignedVector
};
constexpr std::pair<const char*, Bug> kBugs[] = {
    {"clean", Bug::kClean},  // runs clean
    {"missing_barrier", Bug::kMissingBarrier},  // race: read after write, no barrier between
    {"shared_write_write", Bug::kSharedWriteWrite},  // race: threads 2k and 2k+1 write buf[k]
    {"global_blocks", Bug::kGlobalBlocks},  // race: both blocks write out[t]
    {"global_threads", Bug::kGlobalThreads},  // race: threads 2k, 2k+1 write one element
    {"shared_bounds", Bug::kSharedBounds},  // bounds: thread 63 writes buf[64]
    {"global_bounds", Bug::kGlobalBounds},  // bounds: thread 63 reads in[64]
    {"uninit", Bug::kUninit},  // init: threads >= 32 stage nothing
    {"divergent_barrier", Bug::kDivergentBarrier},  // barrier: threads < 32 reach a barrier
    {"barrier_in_phase", Bug::kBarrierInPhase},  // barrier: every thread, inside a phase
    {"copy_not_waited", Bug::kCopyNotWaited},  // race: async staging read, no copy_wait
    {"chunk_not_waited", Bug::kChunkNotWaited},  // race: two groups of copies, only the first waited for
    {"global_uninit", Bug::kGlobalUninit},  // init: reads out[] (an output) before any launch wrote it
    {"global_cross_block", Bug::kGlobalCrossBlock},  // race: block 1 reads out[t], which block 0 wrote
    {"misaligned_vector", Bug::kMisalignedVector},  // alignment: thread 0 loads 4 floats from in + 1
};
constexpr int kBugThreads = 64;

struct BugArgs {
  Bug bug;
  const float* in;
  float* out;
};
struct PlantedBug {
  template <class Ctx> static void run(Ctx& ctx, const BugArgs& a) {
    auto buf = ctx.buffer(reinterpret_cast<float*>(ctx.smem()));
    if (a.bug == Bug::kChunkNotWaited) {  // threads copy in[t] in two chunks, then read a neighbour's
      float* raw = reinterpret_cast<float*>(ctx.smem());
      for (int half = 0; half < 2; ++half) {
        ctx.each_thread([&](int t) {
          if ((t < kBugThreads / 2) == (half == 0)) ctx.template copy_vec<1>(a.in + t, raw + t);
        });
        ctx.copy_commit();
      }
      ctx.copy_wait_prior(1);  // the first chunk only
      ctx.sync();
      ctx.each_thread(
          [&](int t) { ctx.store(a.out + ctx.block() * kBugThreads + t, float(buf[kBugThreads - 1 - t])); });
      return;
    }
    ctx.each_thread([&](int t) {
      if (a.bug == Bug::kMisalignedVector && t == 0) {
        float v4[4];
        ctx.template load_vec<4>(a.in + 1, v4);
      }
      if (a.bug == Bug::kUninit && t >= 32) return;
      if (a.bug == Bug::kCopyNotWaited)
        return ctx.template copy_vec<1>(a.in + t, reinterpret_cast<float*>(ctx.smem()) + t);
      const float v = ctx.load(a.in + t + (a.bug == Bug::kGlobalBounds && t == kBugThreads - 1 ? 1 : 0));
      const int at = a.bug == Bug::kSharedWriteWrite ? t / 2 : a.bug == Bug::kSharedBounds ? t + 1 : t;
      buf[at] = v;
      if (a.bug == Bug::kDivergentBarrier && t < 32) ctx.sync();
      if (a.bug == Bug::kBarrierInPhase) ctx.sync();
    });
    if (a.bug != Bug::kMissingBarrier) ctx.sync();
    ctx.each_thread([&](int t) {
      const int64_t at = a.bug == Bug::kGlobalBlocks    ? t
                         : a.bug == Bug::kGlobalThreads ? ctx.block() * kBugThreads + t / 2
                                                        : ctx.block() * kBugThreads + t;
      float extra = 0;
      if (a.bug == Bug::kGlobalUninit) extra = ctx.load(a.out + at);
      if (a.bug == Bug::kGlobalCrossBlock && ctx.block() == 1) extra = ctx.load(a.out + t);
      ctx.store(a.out + at, float(buf[t]) + float(buf[(t + 1) % kBugThreads]) + extra);
    });
  }
};

at::Tensor emulate_planted_bug(const std::string& name) {
  const auto* it = std::find_if(std::begin(kBugs), std::end(kBugs), [&](const auto& b) { return name == b.first; });
  if (it == std::end(kBugs)) {
    std::string names;
    for (const auto& b : kBugs) names += std::string(names.empty() ? "" : ", ") + b.first;
    TORCH_CHECK_VALUE(false, "bug must be one of ", names, ", got '", name, "'");
  }
  const Launch l{Kernel::kMain, 2, kBugThreads, kBugThreads * int64_t(sizeof(float))};
  // One float more than the program may read, outside the tracked tensor: the planted global
  // out-of-bounds read is caught without reading past the allocation.
  const at::Tensor storage = at::arange(kBugThreads + 1, at::kFloat), in = storage.narrow(0, 0, kBugThreads);
  at::Tensor out = at::zeros({l.grid * kBugThreads}, at::kFloat);
  CpuLauncher L;
  L.san = std::make_unique<BlockSanitizer>();
  L.track(kSlotX, in);
  L.track(kSlotOut, out, true);
  L.launch<PlantedBug>(l, BugArgs{it->second, in.const_data_ptr<float>(), out.mutable_data_ptr<float>()});
  return out;
}

// _bank_audit(True) starts a bank audit (BankAudit, ctx_cpu.h) of the emulated launches that
// follow; _bank_audit(False) ends it and returns one line per phase: "site passes ideal
// instructions" (shared-memory wavefronts of its buffers' element accesses, and the ideal).
std::string run_bank_audit(bool start) {
  auto& audit = bank_audit();
  std::string out;
  if (audit)
    for (const auto& [site, c] : audit->sites)
      out += site + " " + std::to_string(c.passes) + " " + std::to_string(c.ideal) + " " +
             std::to_string(c.instructions) + "\n";
  audit = start ? std::make_unique<BankAudit>() : nullptr;
  return out;
}

}  // namespace
}  // namespace sam_fused::block

TORCH_LIBRARY_FRAGMENT(sam_fused, m) {
  m.def("_bank_audit(bool start) -> str", &sam_fused::block::run_bank_audit);
  m.def("_emulate_fwd(Tensor x, Tensor weight, Tensor? bias, str pool, bool return_map, int variant=0, int rows=0, "
        "int threads=0, bool index64=False, int max_blocks=0, str arch=\"sm_90\", bool sanitize=False) -> (Tensor, "
        "Tensor, Tensor)");
  m.def("_emulate_bwd(Tensor grad_out, Tensor x, Tensor weight, Tensor? bias, Tensor pooled, str pool, "
        "bool return_map, int variant=0, int rows=0, int threads=0, bool index64=False, int max_blocks=0, str "
        "arch=\"sm_90\", bool sanitize=False) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("_emulate_planted_bug(str bug) -> Tensor", &sam_fused::block::emulate_planted_bug);
  m.def("_emulate_plan(int[] shape, ScalarType dtype, str pool, int kh, int kw, bool channels_last, bool return_map, "
        "bool backward, int variant=0, int rows=0, int threads=0, str arch=\"sm_90\") -> (Tensor, bool)",
        &sam_fused::block::emulate_plan);
  m.def("_emulate_pointwise_fwd(Tensor x, Tensor y, int max_blocks=0, bool sanitize=False) -> (Tensor, Tensor)");
  m.def("_emulate_pointwise_bwd(Tensor grad, Tensor x, Tensor y, int max_blocks=0, bool sanitize=False) -> (Tensor, "
        "Tensor, Tensor)");
  m.impl("_emulate_fwd", c10::DispatchKey::CPU, &sam_fused::block::emulate_fwd);
  m.impl("_emulate_bwd", c10::DispatchKey::CPU, &sam_fused::block::emulate_bwd);
  m.impl("_emulate_pointwise_fwd", c10::DispatchKey::CPU, &sam_fused::block::emulate_pointwise_fwd);
  m.impl("_emulate_pointwise_bwd", c10::DispatchKey::CPU, &sam_fused::block::emulate_pointwise_bwd);
}
