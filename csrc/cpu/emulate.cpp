// Test-only CPU build of the CUDA block programs (DESIGN.md §8): the same kernel source and
// launch plan as csrc/cuda/spatial_attention_cuda.cu, run block by block, phase by phase,
// thread by thread through CpuCtx, which records every global access.
//
//   sam_fused::_emulate_fwd(x, weight, bias, pool, return_map, variant, rows, threads, index64,
//                           max_blocks) -> (out, pooled, traffic)
//   sam_fused::_emulate_bwd(grad_out, x, weight, bias, pooled, pool, return_map, variant, rows,
//                           threads, index64, max_blocks) -> (grad_x, grad_weight, grad_bias, traffic)
//
// variant: 0 = the CUDA op's choice, 1 = one pass, 2 = two pass; rows/threads: 0 = the CUDA
// op's choice; index64: force 64-bit offsets; max_blocks > 0 runs only the first max_blocks
// blocks of each launch (outputs then incomplete: for access-pattern reports on big shapes). traffic: int64 [kSlots + 1, 6]; row k < kSlots is tensor slot k (TensorSlot:
// x, grad_out, out/grad_x, pooled, weight, bias, workspace) with columns TrafficRecorder::Field
// (bytes read, unique bytes read, bytes written, unique bytes written, 32-byte sectors
// touched by warp-wide accesses, ideal sectors); the last row is the plan
// (rows, tiles per sample, blocks, two_pass, vector width, threads). Unique bytes restart at
// each kernel launch.
#include <torch/library.h>

#include "../block/ctx_cpu.h"
#include "../block/run.h"

namespace sam::block {
namespace {

struct CpuLauncher {
  TrafficRecorder rec{kSlots};
  Plan last_plan;
  int64_t max_blocks = 0;
  ArchTraits arch() const { return arch_traits(9); }  // plan as for an H100
  void track(int slot, const at::Tensor& t) { rec.add_tensor(slot, t.data_ptr(), t.numel() * t.element_size()); }
  template <class K, class Args> void launch(int64_t grid, int threads, int64_t smem_bytes, const Args& a) {
    rec.begin_launch();
    std::vector<double> smem(smem_bytes / sizeof(double) + 2);  // 16-byte aligned storage
    for (int64_t blk = 0; blk < (max_blocks > 0 ? std::min(grid, max_blocks) : grid); ++blk) {
      CpuCtx ctx{blk, threads, reinterpret_cast<unsigned char*>(smem.data()), &rec};
      K::run(ctx, a);
    }
  }
  at::Tensor traffic() const {
    std::vector<int64_t> v = rec.counts();
    const Plan& p = last_plan;
    v.insert(v.end(), {p.rows, p.tiles, p.blocks, int64_t(p.two_pass), int64_t(p.vec), int64_t(p.threads)});
    return at::tensor(v, at::kLong).reshape({kSlots + 1, TrafficRecorder::kFields});
  }
};

Overrides overrides(int64_t variant, int64_t rows, int64_t threads) {
  TORCH_CHECK_VALUE(variant >= 0 && variant <= 2, "variant must be 0 (auto), 1 (one pass) or 2 (two pass)");
  TORCH_CHECK_VALUE(threads == 0 || (threads >= 64 && threads <= 1024 && (threads & (threads - 1)) == 0),
                    "threads must be 0 or a power of two in [64, 1024]");
  TORCH_CHECK_VALUE(rows >= 0, "rows must be >= 0");
  return {Variant(variant), rows, int(threads)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> emulate_fwd(const at::Tensor& x, const at::Tensor& weight,
                                                           const std::optional<at::Tensor>& bias, const std::string& pool,
                                                           bool return_map, int64_t variant, int64_t rows, int64_t threads,
                                                           bool index64, int64_t max_blocks) {
  CpuLauncher L;
  L.max_blocks = max_blocks;
  auto [out, pooled] = run_forward(L, x, weight, bias, pool, return_map, overrides(variant, rows, threads), index64);
  return {out, pooled, L.traffic()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> emulate_bwd(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& pooled, const std::string& pool, bool return_map, int64_t variant, int64_t rows, int64_t threads,
    bool index64, int64_t max_blocks) {
  CpuLauncher L;
  L.max_blocks = max_blocks;
  auto [dx, dw, db] = run_backward(L, grad_out, x, weight, bias, pooled, pool, return_map,
                                   overrides(variant, rows, threads), index64);
  return {dx, dw, db, L.traffic()};
}

}  // namespace
}  // namespace sam::block

TORCH_LIBRARY_FRAGMENT(sam_fused, m) {
  m.def("_emulate_fwd(Tensor x, Tensor weight, Tensor? bias, str pool, bool return_map, int variant=0, int rows=0, "
        "int threads=0, bool index64=False, int max_blocks=0) -> (Tensor, Tensor, Tensor)");
  m.def("_emulate_bwd(Tensor grad_out, Tensor x, Tensor weight, Tensor? bias, Tensor pooled, str pool, "
        "bool return_map, int variant=0, int rows=0, int threads=0, bool index64=False, int max_blocks=0) -> (Tensor, Tensor, Tensor, Tensor)");
  m.impl("_emulate_fwd", c10::DispatchKey::CPU, &sam::block::emulate_fwd);
  m.impl("_emulate_bwd", c10::DispatchKey::CPU, &sam::block::emulate_bwd);
}
