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
  // One vector from global memory straight into the staged tile: one load, one store, each
  // V * sizeof(T) bytes wide (both addresses aligned to that, see choose_vec).
  template <int V, class T> __device__ __forceinline__ void copy_vec(const T* src, T* dst) {
    *reinterpret_cast<VecWord<V, T>*>(dst) = *reinterpret_cast<const VecWord<V, T>*>(src);
  }
};

// Block program K over its arguments: every block runs K::run with this block's context. The
// launch bounds are those the plans assume (traits.h: at most kMaxThreads threads, kBlocksPerSm
// resident blocks, hence at most kRegsPerThread registers).
template <class K, class A> __global__ void __launch_bounds__(kMaxThreads, kBlocksPerSm)
    block_program_kernel(const A a) {
  CudaCtx ctx;
  K::run(ctx, a);
}

}  // namespace sam_fused::block
