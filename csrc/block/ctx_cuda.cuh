// CUDA execution context of the block programs (docs/design.md §8): maps 1:1 onto threadIdx,
// dynamic __shared__ memory, __syncthreads and warp shuffles; vanishes after inlining. Also the
// one kernel that runs a block program K with it (every CUDA launcher launches that).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../sam_math.h"
#include "traits.h"

#define SAM_FUSED_BLOCK __device__ __forceinline__

namespace sam_fused::block {

// Per-thread state: on the GPU each thread holds its own element (registers).
template <class S> struct CudaThreadState {
  S v;
  __device__ __forceinline__ S& operator[](int) { return v; }
};

// Shuffle of any trivially copyable value, 32 bits at a time.
template <class V> __device__ __forceinline__ V shfl_xor(V v, int lane_mask) {
  static_assert(sizeof(V) % 4 == 0, "shuffled values are whole 32-bit words");
  unsigned words[sizeof(V) / 4];
  memcpy(words, &v, sizeof(V));
  for (int i = 0; i < int(sizeof(V) / 4); ++i) words[i] = __shfl_xor_sync(0xffffffffu, words[i], lane_mask);
  memcpy(&v, words, sizeof(V));
  return v;
}

// The unsigned word type of a V-element vector of T (16, 8, 4 or 2 bytes).
template <int V, class T>
using VecWord = std::conditional_t<
    V * sizeof(T) == 16, uint4,
    std::conditional_t<V * sizeof(T) == 8, uint2, std::conditional_t<V * sizeof(T) == 4, unsigned, unsigned short>>>;

struct CudaCtx {
  __device__ __forceinline__ int64_t block() const { return blockIdx.x; }
  __device__ __forceinline__ int threads() const { return blockDim.x; }
  __device__ __forceinline__ unsigned char* smem() const {
    extern __shared__ __align__(16) unsigned char sam_smem[];
    return sam_smem;
  }
  template <class F> __device__ __forceinline__ void each_thread(F&& f) { f(int(threadIdx.x)); }
  __device__ __forceinline__ void sync() { __syncthreads(); }
  // A block buffer: the raw pointer (the CPU context checks its elements when sanitizing).
  template <class T> __device__ __forceinline__ T* buffer(T* p) const { return p; }

  template <class S> __device__ __forceinline__ CudaThreadState<S> thread_state() { return {}; }
  template <class S, class Get, class Op>
  __device__ __forceinline__ void warp_reduce(CudaThreadState<S>& st, Get&& get, Op&& op) {
    auto& v = get(st[0]);
    for (int o = 16; o >= 1; o /= 2) v = op(v, shfl_xor(v, o));
  }

  template <class T> __device__ __forceinline__ T load(const T* p) { return *p; }
  template <class T> __device__ __forceinline__ void store(T* p, T v) { *p = v; }
  // 128-bit (or narrower) vector access; the caller guarantees V * sizeof(T)-byte alignment.
  // Whole-word accesses through VecWord: a memcpy into T* of unknown alignment compiles to
  // single-byte shared stores.
  template <int V, class T> __device__ __forceinline__ void load_vec(const T* p, T* out) {
    const VecWord<V, T> w = *reinterpret_cast<const VecWord<V, T>*>(p);
    memcpy(out, &w, sizeof(w));  // out is a register array: the copy vanishes
  }
  template <int V, class T> __device__ __forceinline__ void store_vec(T* p, const T* v) {
    VecWord<V, T> w;
    memcpy(&w, v, sizeof(w));
    *reinterpret_cast<VecWord<V, T>*>(p) = w;
  }
  // One vector from global memory straight into the staged tile (both addresses aligned to
  // V * sizeof(T), see choose_vec). On sm_80+ an asynchronous copy (cp.async, LDGSTS): it
  // bypasses registers, so a thread has all of its tile vectors in flight at once instead of
  // one load per round trip; copy_wait() then waits for the thread's copies (before the
  // barrier that publishes the tile).
  template <int V, class T> __device__ __forceinline__ void copy_vec(const T* src, T* dst) {
    constexpr int kBytes = int(sizeof(VecWord<V, T>));
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (kBytes == 16 || kBytes == 8 || kBytes == 4) {
      const unsigned to = static_cast<unsigned>(__cvta_generic_to_shared(dst));
      if constexpr (kBytes == 16)  // .cg: L2 only, the tile is read once from global
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(to), "l"(src) : "memory");
      else asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(to), "l"(src), "n"(kBytes) : "memory");
      return;
    }
#endif
    *reinterpret_cast<VecWord<V, T>*>(dst) = *reinterpret_cast<const VecWord<V, T>*>(src);
  }
  __device__ __forceinline__ void copy_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
  }
  // Closes the group of the thread's copies issued since the last commit (cp.async.commit_group).
  __device__ __forceinline__ void copy_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
  }
  // Waits until at most `newer` of the thread's committed groups are still in flight (all older
  // ones have landed). The count is an immediate of cp.async.wait_group: 0..kStageChunks-1.
  __device__ __forceinline__ void copy_wait_prior(int newer) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    static_assert(kStageChunks <= 4, "copy_wait_prior names 0..3 groups");
    switch (newer) {
      case 0:
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        break;
      case 1:
        asm volatile("cp.async.wait_group 1;\n" ::: "memory");
        break;
      case 2:
        asm volatile("cp.async.wait_group 2;\n" ::: "memory");
        break;
      default:
        asm volatile("cp.async.wait_group 3;\n" ::: "memory");
        break;
    }
#endif
  }
  // A lane that an unrolled loop predicates off (nothing to do on the GPU; the CPU context
  // keeps its access count aligned with the other lanes').
  __device__ __forceinline__ void skip_access() {}
};

// The resident blocks per SM a block program's registers must allow: K::kMinBlocksPerSm where
// it names one, else kBlocksPerSm.
// C++17, no requires-expression: older torch (2.11) compiles extensions with -std=c++17.
template <class K, class = void> struct MinBlocksPerSm {
  static constexpr int value = int(kBlocksPerSm);
};
template <class K> struct MinBlocksPerSm<K, std::void_t<decltype(K::kMinBlocksPerSm)>> {
  static constexpr int value = K::kMinBlocksPerSm;
};
template <class K> constexpr int min_blocks_per_sm() { return MinBlocksPerSm<K>::value; }

// Block program K over its arguments: every block runs K::run with this block's context. The
// launch bounds are those the plans assume (traits.h: at most kMaxThreads threads, kBlocksPerSm
// resident blocks, hence at most kRegsPerThread registers).
template <class K, class A> __global__ void __launch_bounds__(kMaxThreads, min_blocks_per_sm<K>())
    block_program_kernel(const A a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent (CudaLauncher::launch), this grid may start before the
  // previous kernel ends: first let the next kernel's launch begin once every block of this grid
  // has started (its blocks then only fill the slots this grid's last wave frees), then wait
  // until the previous grid has finished and its writes are visible. Nothing is read or written
  // before the wait. (Launched without the attribute, both are no-ops.)
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  CudaCtx ctx;
  K::run(ctx, a);
}

}  // namespace sam_fused::block
