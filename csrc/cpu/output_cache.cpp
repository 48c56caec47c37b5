// The output block cache of output_cache.h.
#include "output_cache.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/accumulate.h>

#include <cstdlib>
#include <mutex>
#include <string_view>
#include <vector>

namespace sam_fused::cpu {
namespace {

// glibc's default mmap threshold: from there up, a freed output can go back to the kernel (munmap,
// or a heap trim when two are freed together), so 2.25 MiB outputs (the HAR layer at batch 16)
// were first-touched again every step. Below it, the heap's bins keep their pages.
constexpr size_t kMinBytes = size_t(128) << 10;
constexpr size_t kMaxBlocks = 8;  // freed blocks kept: a forward+backward step frees 2 per layer size
constexpr size_t kMaxBytes = size_t(256) << 20;  // and their bytes together

class OutputCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    void* p = take(n);
    if (!p) p = c10::alloc_cpu(n);
    return {p, new Block{p, n}, &release, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
  static OutputCache& instance();

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };
  std::mutex mutex_;
  std::vector<Block> free_;  // freed blocks, oldest first
  size_t held_ = 0;

  void* take(size_t n) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = free_.size(); i-- > 0;)  // the most recently freed first: its pages are warmest
      if (free_[i].bytes == n) {
        void* p = free_[i].ptr;
        held_ -= n;
        free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
        return p;
      }
    return nullptr;
  }
  void give_back(const Block& b) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(b);
    held_ += b.bytes;
    while (free_.size() > kMaxBlocks || held_ > kMaxBytes) {  // drop the oldest
      held_ -= free_.front().bytes;
      c10::free_cpu(free_.front().ptr);
      free_.erase(free_.begin());
    }
  }
  static void release(void* ctx) {
    const Block* b = static_cast<const Block*>(ctx);
    instance().give_back(*b);
    delete b;
  }
};

// Never destroyed: tensors may outlive static destruction at exit.
OutputCache& OutputCache::instance() {
  static OutputCache* cache = new OutputCache();
  return *cache;
}

// SAM_FUSED_CPU_OUTPUT_CACHE=0 (read at every call) turns the cache off: outputs then come from
// the default allocator, and no freed block is held beyond those already kept.
bool cache_enabled() {
  const char* v = std::getenv("SAM_FUSED_CPU_OUTPUT_CACHE");
  return !(v && std::string_view(v) == "0");
}

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat fmt) {
  const size_t bytes = size_t(c10::multiply_integers(sizes)) * options.dtype().itemsize();
  if (bytes < kMinBytes || !cache_enabled() || options.device().type() != c10::DeviceType::CPU ||
      options.pinned_memory())
    return at::empty(sizes, options.memory_format(fmt));
  return at::detail::empty_generic(sizes, &OutputCache::instance(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), fmt);
}

}  // namespace sam_fused::cpu
