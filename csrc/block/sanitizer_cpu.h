// Sanitizers of the CPU execution context (docs/design.md §8): test-only. What compute-sanitizer
// checks on a GPU, checked on the emulated block programs when a launcher hands CpuCtx a
// BlockSanitizer (the default emulation runs without one: a null pointer, no shadow state):
//   race:    within one barrier interval of a block, two different threads touching the same
//            shared-memory byte, at least one of them writing (racecheck); two writes to the same
//            global byte in one launch by different blocks, or by different threads of a block
//            within one barrier interval; a global byte one block of a launch writes and another
//            reads (blocks run concurrently on a GPU, in order here: racecheck sees shared
//            memory only, so this is checked nowhere else);
//   bounds:  a shared-memory access outside the launch's dynamic allocation, a global access
//            outside every tensor of the call (memcheck);
//   init:    a shared-memory read of a byte no thread of the block wrote earlier (initcheck); a
//            global read of a byte of a tensor the call writes (an output, the workspace: its
//            contents undefined when the call starts) that no launch of the call wrote earlier;
//            a shared-memory read of bytes an asynchronous copy (ctx.copy_vec) may still be
//            writing, i.e. before the block's ctx.copy_wait();
//   barrier: a barrier inside a phase body, i.e. in per-thread code, reached by some or all of
//            the threads (synccheck: a divergent barrier; the CPU context cannot split a phase,
//            so even a uniform one is an error here).
// Barrier intervals are delimited by ctx.sync() (several each_thread phases without a barrier
// between them are one interval, as on the GPU). A barrier at block scope is reached by every
// thread by construction: block-scope code is uniform, per-thread code lives in each_thread.
// The first violation throws std::runtime_error (RuntimeError in Python) naming the kind, the
// launch, block, thread(s), barrier interval and the byte offset.
#pragma once
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sam_fused::block {

class BlockSanitizer {
 public:
  // A tensor the kernels may access (once; a region registered again is ignored). written: the
  // call writes it and its bytes hold nothing defined until a launch does (outputs, workspace).
  void add_tensor(const void* base, int64_t bytes, bool written = false) {
    const char* b = static_cast<const char*>(base);
    for (const auto& r : regions_)
      if (r.base == b) return;
    if (base && bytes > 0) regions_.push_back({b, bytes, written, {}});
  }
  // smem: the launch's dynamic shared memory, smem_bytes of it allocated to the kernel within
  // the emulation's capacity bytes (accesses past the allocation but within the capacity are
  // reported as shared-memory overruns, with their offset).
  void begin_launch(const void* smem, int64_t smem_bytes, int64_t capacity, int threads) {
    ++launch_;
    smem_ = static_cast<const char*>(smem);
    smem_bytes_ = smem_bytes;
    capacity_ = capacity;
    threads_ = threads;
    shared_.assign(smem_bytes, SharedByte{});
    for (auto& r : regions_)
      if (r.writes.empty()) r.writes.assign(r.bytes, GlobalByte{});
  }
  void begin_block(int64_t block) {
    block_ = block;
    ++block_serial_;
    ++interval_;
    interval_in_block_ = 0;
    thread_ = -1;
    async_.clear();
    group_ = 0;
  }
  void begin_phase() { barrier_hits_ = 0; }
  void begin_thread(int t) { thread_ = t; }
  void end_phase() {
    thread_ = -1;
    if (barrier_hits_ == threads_) fail("barrier", "barrier inside a phase body (per-thread code)", -1, -1, "");
    if (barrier_hits_ > 0)
      fail("barrier",
           "barrier inside divergent code: reached by " + std::to_string(barrier_hits_) + " of " +
               std::to_string(threads_) + " threads",
           -1, -1, "");
  }
  // ctx.sync(): at block scope a barrier every thread reaches; inside a phase, counted.
  void barrier() {
    if (thread_ >= 0) {
      ++barrier_hits_;
      return;
    }
    ++interval_;
    ++interval_in_block_;
  }

  // An asynchronous global->shared copy (cp.async) by the current thread: a write whose bytes
  // land at an unknown time before the block's next copy_wait; reading them earlier is a race.
  void async_copy(const void* dst, int64_t bytes) {
    access(dst, bytes, true);
    const int64_t off = static_cast<const char*>(dst) - smem_;
    for (int64_t i = off; i < off + bytes; ++i) shared_[i].async_pending = true;
    async_.push_back({off, bytes, group_});
  }
  // ctx.copy_commit() at block scope: the copies issued since the last commit form a group.
  void async_commit() { ++group_; }
  // ctx.copy_wait() (newer < 0) / ctx.copy_wait_prior(newer) at block scope: every thread's
  // copies (all of them / those of every committed group but the `newer` most recent) have
  // landed, as if written now (so other threads still need a barrier before reading them).
  void async_wait(int newer = -1) {
    const int64_t landed_below = newer < 0 ? std::numeric_limits<int64_t>::max() : group_ - newer;
    std::vector<AsyncCopy> pending;
    for (const AsyncCopy& c : async_) {
      if (c.group >= landed_below) {
        pending.push_back(c);
        continue;
      }
      for (int64_t i = c.off; i < c.off + c.bytes; ++i) {
        shared_[i].async_pending = false;
        shared_[i].w_interval = interval_;
      }
    }
    async_ = std::move(pending);
  }

  void access(const void* p, int64_t bytes, bool write) {
    const char* cp = static_cast<const char*>(p);
    if (cp >= smem_ && cp < smem_ + capacity_) return access_shared(cp - smem_, bytes, write);
    for (auto& r : regions_)
      if (cp >= r.base && cp < r.base + r.bytes) return access_global(r, cp - r.base, bytes, write);
    fail("bounds", access_what("global", write, bytes) + " outside every tensor of the call and the shared memory",
         thread_, -1, "address " + hex(reinterpret_cast<uintptr_t>(p)));
  }

 private:
  static constexpr int kMany = -2;  // several threads read the byte in this interval
  struct SharedByte {
    uint64_t written_block = 0;  // block serial of the last write (initialised in that block)
    uint64_t w_interval = 0, r_interval = 0;
    int writer = -1, reader = -1;
    bool async_pending = false;  // written by an asynchronous copy not yet waited for
  };
  struct GlobalByte {
    uint64_t launch = 0, interval = 0;  // the last write (launch 0: none in this call)
    int64_t block = -1;
    int thread = -1;
    uint64_t read_launch = 0;  // the last launch that read the byte, and its reading block
    int64_t read_block = -1;   // (kMany: several)
  };
  struct Region {
    const char* base;
    int64_t bytes;
    bool written;  // contents undefined until a launch writes them
    std::vector<GlobalByte> writes;
  };

  void access_shared(int64_t off, int64_t bytes, bool write) {
    if (off + bytes > smem_bytes_)
      fail("bounds",
           access_what("shared", write, bytes) + " past the end of the " + std::to_string(smem_bytes_) +
               "-byte dynamic allocation",
           thread_, -1, "shared offset " + std::to_string(off));
    if (thread_ < 0)
      fail("race", "shared-memory access at block scope (outside each_thread): every thread would make it", thread_, -1,
           "shared offset " + std::to_string(off));
    for (int64_t i = off; i < off + bytes; ++i) {
      SharedByte& b = shared_[i];
      const std::string where = "shared offset " + std::to_string(i);
      if (b.w_interval == interval_ && b.writer != thread_)
        fail("race", std::string(write ? "write after write" : "read after write") + " in shared memory", thread_,
             b.writer, where);
      if (write) {
        if (b.r_interval == interval_ && b.reader != thread_)
          fail("race", "write after read in shared memory", thread_, b.reader == kMany ? -1 : b.reader, where);
        b.w_interval = interval_;
        b.writer = thread_;
        b.written_block = block_serial_;
      } else {
        if (b.async_pending)
          fail("race", "shared-memory read of a byte an asynchronous copy may still be writing (copy_wait missing)",
               thread_, b.writer, where);
        if (b.written_block != block_serial_)
          fail("init", "shared-memory read of a byte no thread of the block wrote", thread_, -1, where);
        if (b.r_interval != interval_) b.reader = thread_;
        else if (b.reader != thread_) b.reader = kMany;
        b.r_interval = interval_;
      }
    }
  }
  void access_global(Region& r, int64_t off, int64_t bytes, bool write) {
    if (off + bytes > r.bytes)
      fail("bounds",
           access_what("global", write, bytes) + " past the end of a " + std::to_string(r.bytes) + "-byte tensor",
           thread_, -1, "byte offset " + std::to_string(off));
    for (int64_t i = off; i < off + bytes; ++i) {
      GlobalByte& w = r.writes[i];
      if (!write) {
        if (r.written && w.launch == 0)
          fail("init", "global read of a byte of an output or workspace tensor that no launch of the call wrote",
               thread_, -1, "byte offset " + std::to_string(i));
        if (w.launch == launch_ && w.block != block_)
          fail("race", "global read of a byte block " + std::to_string(w.block) + " of this launch wrote", thread_,
               w.thread, "byte offset " + std::to_string(i));
        w.read_block = w.read_launch == launch_ && w.read_block != block_ ? kMany : block_;
        w.read_launch = launch_;
        continue;
      }
      if (w.read_launch == launch_ && w.read_block != block_)
        fail("race",
             "global write of a byte " +
                 (w.read_block == kMany ? std::string("other blocks") : "block " + std::to_string(w.read_block)) +
                 " of this launch read",
             thread_, -1, "byte offset " + std::to_string(i));
      if (w.launch == launch_ && (w.block != block_ || (w.thread != thread_ && w.interval == interval_)))
        fail("race",
             "write after write in global memory by " + (w.block != block_
                                                             ? "block " + std::to_string(w.block) + " and this block"
                                                             : std::string("two threads")),
             thread_, w.thread, "byte offset " + std::to_string(i));
      w.launch = launch_, w.interval = interval_, w.block = block_, w.thread = thread_;
    }
  }
  static std::string access_what(const char* space, bool write, int64_t bytes) {
    return std::string(space) + (write ? " write" : " read") + " of " + std::to_string(bytes) + " bytes";
  }
  static std::string hex(uintptr_t v) {
    std::ostringstream s;
    s << std::hex << "0x" << v;
    return s.str();
  }
  [[noreturn]] void fail(const char* kind, const std::string& what, int thread, int other,
                         const std::string& where) const {
    std::ostringstream s;
    s << "block sanitizer: " << kind << ": " << what << " (launch " << launch_ - 1 << ", block " << block_;
    if (thread >= 0) s << ", thread " << thread;
    if (other >= 0) s << ", other thread " << other;
    s << ", barrier interval " << interval_in_block_;
    if (!where.empty()) s << ", " << where;
    s << ")";
    throw std::runtime_error(s.str());
  }

  std::vector<Region> regions_;
  std::vector<SharedByte> shared_;
  struct AsyncCopy {
    int64_t off, bytes, group;  // group: commits before the copy was issued
  };
  std::vector<AsyncCopy> async_;  // copies not yet waited for
  int64_t group_ = 0;             // commits so far in this block
  const char* smem_ = nullptr;
  int64_t smem_bytes_ = 0, capacity_ = 0, block_ = -1;
  uint64_t launch_ = 0, block_serial_ = 0, interval_ = 0;
  int interval_in_block_ = 0, threads_ = 0, thread_ = -1, barrier_hits_ = 0;
};

}  // namespace sam_fused::block
