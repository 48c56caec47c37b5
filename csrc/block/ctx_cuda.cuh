// CUDA execution context of the block programs (DESIGN.md §8): maps 1:1 onto threadIdx,
// dynamic __shared__ memory, __syncthreads and warp shuffles; vanishes after inlining.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../sam_math.h"

#define SAM_BLOCK __device__ __forceinline__

namespace sam::block {

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

struct CudaCtx {
  __device__ __forceinline__ int64_t block() const { return blockIdx.x; }
  __device__ __forceinline__ int threads() const { return blockDim.x; }
  __device__ __forceinline__ unsigned char* smem() const {
    extern __shared__ __align__(16) unsigned char sam_smem[];
    return sam_smem;
  }
  template <class F> __device__ __forceinline__ void each_thread(F&& f) { f(int(threadIdx.x)); }
  __device__ __forceinline__ void sync() { __syncthreads(); }

  template <class S> __device__ __forceinline__ CudaThreadState<S> thread_state() { return {}; }
  template <class S, class Get, class Op>
  __device__ __forceinline__ void warp_reduce(CudaThreadState<S>& st, Get&& get, Op&& op) {
    auto& v = get(st[0]);
    for (int o = 16; o >= 1; o /= 2) v = op(v, shfl_xor(v, o));
  }

  template <class T> __device__ __forceinline__ T load(const T* p) { return *p; }
  template <class T> __device__ __forceinline__ void store(T* p, T v) { *p = v; }
  // 128-bit (or narrower) vector access; the caller guarantees V * sizeof(T)-byte alignment.
  template <int V, class T> __device__ __forceinline__ void load_vec(const T* p, T* out) {
    using W = std::conditional_t<V * sizeof(T) == 16, uint4,
                                 std::conditional_t<V * sizeof(T) == 8, uint2,
                                                    std::conditional_t<V * sizeof(T) == 4, unsigned, unsigned short>>>;
    const W w = *reinterpret_cast<const W*>(p);
    memcpy(out, &w, sizeof(W));
  }
  template <int V, class T> __device__ __forceinline__ void store_vec(T* p, const T* v) {
    using W = std::conditional_t<V * sizeof(T) == 16, uint4,
                                 std::conditional_t<V * sizeof(T) == 8, uint2,
                                                    std::conditional_t<V * sizeof(T) == 4, unsigned, unsigned short>>>;
    W w;
    memcpy(&w, v, sizeof(W));
    *reinterpret_cast<W*>(p) = w;
  }
};

}  // namespace sam::block
