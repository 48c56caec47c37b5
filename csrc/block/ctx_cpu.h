// CPU execution context of the block programs (docs/design.md §8): test-only.
//
// Runs one block at a time; `each_thread(f)` runs f(t) for every thread t in order, so a
// phase's threads see the same shared memory a GPU block would after the previous barrier
// (barriers are the phase boundaries and cost nothing here). Warp collectives operate on
// per-thread state arrays with the same butterfly order as the CUDA shuffles (same bits).
// Every global access is recorded by a TrafficRecorder: bytes requested and unique bytes per
// tensor, and per warp-wide access instruction the 32-byte sectors it touches. Accesses
// through the context to the block's shared memory (the staged tile) count bank wavefronts
// instead: the shared-memory passes a warp-wide access needs (bank conflicts add passes).
// With a BlockSanitizer (sanitizer_cpu.h) every access through the context, including the
// element accesses of the block's buffers (`buffer`), is also checked; without one (the
// default) the only cost is a null test.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../sam_math.h"
#include "sanitizer_cpu.h"

#define SAM_FUSED_BLOCK inline

namespace sam_fused::block {

// Bank audit (test-only, off unless asked): the shared-memory wavefronts of the element accesses
// of block buffers (ctx.buffer(p)[i]), which the traffic counts leave out, per phase (the
// source line of the phase's each_thread) and access ("file:line#k": the k-th element access
// of the phase's threads). The seq-th element access of every lane of a warp
// in a phase counts as one warp-wide instruction, as for the counted accesses; lanes that
// diverge (a border pixel taking other taps) can pair accesses of different instructions, so a
// site's excess is an upper bound to read against the code.
struct BankAudit {
  struct Site {
    int64_t passes = 0, ideal = 0, instructions = 0;
  };
  std::map<std::string, Site> sites;
};

// Counters per registered tensor ("slot"); see TrafficRecorder::kFields.
class TrafficRecorder {
 public:
  enum Field { kRead, kReadUnique, kWritten, kWrittenUnique, kSectors, kIdealSectors, kFields };
  static constexpr int kSectorBytes = 32;
  static constexpr int kBanks = 32, kBankBytes = 4;

  explicit TrafficRecorder(int slots) : counts_(slots * kFields, 0) {}

  void add_tensor(int slot, const void* base, int64_t bytes) {
    if (base && bytes > 0) regions_.push_back({static_cast<const char*>(base), bytes, slot, {}, {}});
  }
  // A new kernel launch: unique-byte tracking restarts (between launches of a large problem
  // the data has left L2, so each launch's unique bytes are DRAM bytes).
  void begin_launch() {
    flush_warp();
    for (auto& r : regions_) {
      r.read_seen.assign(r.bytes, 0);
      r.written_seen.assign(r.bytes, 0);
    }
  }
  // The running launch's shared memory, counted under `slot` (bytes; sectors = wavefronts).
  void set_shared(const void* base, int64_t bytes, int slot) {
    flush_warp();
    shared_ = {static_cast<const char*>(base), bytes, slot, {}, {}};
  }
  void begin_thread(int t) {
    if (t / 32 != warp_) {
      flush_warp();
      warp_ = t / 32;
    }
    lane_ = t % 32;
    seq_ = 0;
    eseq_ = 0;
  }
  void end_phase() {
    flush_warp();
    warp_ = -1;
  }

  void access(const void* p, int bytes, bool write) {
    const char* cp = static_cast<const char*>(p);
    if (shared_.base && cp >= shared_.base && cp < shared_.base + shared_.bytes) return access_shared(cp, bytes, write);
    Region* r = find(cp);
    if (!r) return;  // not a tracked tensor (cannot happen for kernel arguments)
    int64_t* c = &counts_[r->slot * kFields];
    const int64_t off = static_cast<const char*>(p) - r->base;
    auto& seen = write ? r->written_seen : r->read_seen;
    int64_t fresh = 0;
    for (int i = 0; i < bytes; ++i) fresh += seen[off + i] ? 0 : 1, seen[off + i] = 1;
    c[write ? kWritten : kRead] += bytes;
    c[write ? kWrittenUnique : kReadUnique] += fresh;
    // The seq-th access of every lane of a warp is the same warp-wide instruction.
    if (int(pending_.size()) <= seq_) pending_.resize(seq_ + 1);
    Pending& w = pending_[seq_++];
    w.slot = r->slot;
    w.bytes += bytes;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    for (uintptr_t s = a / kSectorBytes; s <= (a + bytes - 1) / kSectorBytes; ++s) w.sectors.push_back(s);
  }

  void skip_access() { ++seq_; }

  // Bank audit: where the phase's element accesses are counted, and one such access.
  void set_audit(BankAudit* audit) { audit_ = audit; }
  bool auditing() const { return audit_ != nullptr; }
  void set_site(const char* file, int line) {
    if (!audit_) return;
    flush_warp();
    const char* base = std::strrchr(file, '/');
    site_ = std::string(base ? base + 1 : file) + ":" + std::to_string(line);
  }
  void element(const void* p, int bytes) {
    const char* cp = static_cast<const char*>(p);
    if (!audit_ || !shared_.base || cp < shared_.base || cp >= shared_.base + shared_.bytes) return;
    push_shared(pending_elem_, eseq_, cp, bytes);
  }

  const std::vector<int64_t>& counts() const { return counts_; }

 private:
  struct Region {
    const char* base;
    int64_t bytes;
    int slot;
    std::vector<uint8_t> read_seen, written_seen;
  };
  struct Pending {
    int slot = -1;
    int64_t bytes = 0;
    std::vector<uintptr_t> sectors;  // global: sectors touched; shared: see lanes
    bool shared = false;
    std::vector<std::pair<int, int64_t>> lanes;  // shared: (lane, byte offset) of each lane's access
    int width = 0;                               // shared: bytes per lane
    void reset() {
      slot = -1;
      bytes = 0;
      shared = false;
      sectors.clear();
      lanes.clear();  // keeps the capacity
    }
  };
  // This lane's seq-th shared access, into the list's seq-th warp-wide instruction.
  void push_shared(std::vector<Pending>& list, int& seq, const char* p, int bytes) {
    if (int(list.size()) <= seq) list.resize(seq + 1);
    Pending& w = list[seq++];
    w.slot = shared_.slot;
    w.shared = true;
    w.width = bytes;
    w.bytes += bytes;
    w.lanes.push_back({lane_, p - shared_.base});
  }
  void access_shared(const char* p, int bytes, bool write) {
    counts_[shared_.slot * kFields + (write ? kWritten : kRead)] += bytes;
    // Lanes whose seq-th access goes to shared memory while others' goes to global (a warp
    // straddling the staged rows) issue two instructions: kept apart.
    push_shared(pending_shared_, seq_, p, bytes);
  }
  // Wavefronts of a warp-wide shared access: lanes are served in groups of 128 bytes' worth
  // (32 lanes of <= 4 bytes, 16 of 8, 8 of 16); a group takes as many passes as the most
  // distinct 4-byte words any one bank holds among its addresses. Ideal: each group's bytes /
  // 128, rounded up (a group with idle lanes still takes a pass: not a conflict). Returns
  // (passes, ideal).
  static std::pair<int64_t, int64_t> wavefronts(const Pending& w) {
    const int group = w.width >= 16 ? 8 : w.width == 8 ? 16 : 32;
    int64_t total = 0, ideal = 0;
    for (int g0 = 0; g0 < 32; g0 += group) {
      std::vector<int64_t> words[kBanks];
      int64_t bytes = 0;
      for (const auto& [lane, off] : w.lanes)
        if (lane >= g0 && lane < g0 + group) {
          bytes += w.width;
          for (int64_t word = off / kBankBytes; word <= (off + w.width - 1) / kBankBytes; ++word)
            words[word % kBanks].push_back(word);
        }
      int64_t passes = 0;
      for (auto& b : words) {
        std::sort(b.begin(), b.end());
        passes = std::max<int64_t>(passes, std::unique(b.begin(), b.end()) - b.begin());
      }
      total += passes;
      ideal += (bytes + kBanks * kBankBytes - 1) / (kBanks * kBankBytes);
    }
    return {total, ideal};
  }
  Region* find(const char* p) {
    for (auto& r : regions_)
      if (p >= r.base && p < r.base + r.bytes) return &r;
    return nullptr;
  }
  void flush(Pending& w) {
    if (w.slot < 0) return;
    int64_t* c = &counts_[w.slot * kFields];
    if (w.shared) {
      const auto [passes, ideal] = wavefronts(w);
      c[kSectors] += passes;
      c[kIdealSectors] += ideal;
    } else {
      std::sort(w.sectors.begin(), w.sectors.end());
      c[kSectors] += std::unique(w.sectors.begin(), w.sectors.end()) - w.sectors.begin();
      c[kIdealSectors] += (w.bytes + kSectorBytes - 1) / kSectorBytes;
    }
    w.reset();
  }
  void flush_warp() {
    for (auto& w : pending_) flush(w);
    for (auto& w : pending_shared_) flush(w);
    for (size_t k = 0; k < pending_elem_.size(); ++k) {
      Pending& w = pending_elem_[k];
      if (w.slot < 0 || !audit_) continue;
      const auto [passes, ideal] = wavefronts(w);
      BankAudit::Site& site = audit_->sites[site_ + "#" + std::to_string(k)];
      site.passes += passes;
      site.ideal += ideal;
      site.instructions += 1;
      w.reset();
    }
  }
  std::vector<int64_t> counts_;
  std::vector<Region> regions_;
  std::vector<Pending> pending_, pending_shared_, pending_elem_;
  Region shared_{nullptr, 0, 0, {}, {}};
  int warp_ = -1, lane_ = 0, seq_ = 0, eseq_ = 0;
  BankAudit* audit_ = nullptr;
  std::string site_;
};

// An element of a block buffer seen through the sanitizer: reads and writes are checked, not
// counted as traffic (the buffers are the block's shared memory, or its scratch region); with
// a bank audit running (rec not null), counted as the audit's element accesses.
template <class T> struct CheckedRef {
  T* p;
  BlockSanitizer* san;
  TrafficRecorder* rec = nullptr;
  operator T() const {
    if (san) san->access(p, sizeof(T), false);
    if (rec) rec->element(p, sizeof(T));
    return *p;
  }
  CheckedRef& operator=(const T& v) {
    if (san) san->access(p, sizeof(T), true);
    if (rec) rec->element(p, sizeof(T));
    *p = v;
    return *this;
  }
  CheckedRef& operator=(const CheckedRef& o) { return *this = T(o); }
};
// A block buffer (ctx.buffer(p)): on the GPU the raw pointer, here a view with checked elements.
template <class T> struct CheckedPtr {
  using element_type = T;
  T* p;
  BlockSanitizer* san;
  TrafficRecorder* rec = nullptr;  // a bank audit is running
  CheckedRef<T> operator[](int64_t i) const { return {p + i, san, rec}; }
};
template <class T> T* raw_of(const CheckedPtr<T>& b) { return b.p; }

// Per-thread state that lives across phases: one element per thread of the block.
template <class S> struct CpuThreadState {
  std::vector<S> v;
  S& operator[](int t) { return v[t]; }
};

struct CpuCtx {
  int64_t block_id;
  int nthreads;
  unsigned char* shared;
  TrafficRecorder* rec;
  BlockSanitizer* san = nullptr;  // null: no checks

  int64_t block() const { return block_id; }
  int threads() const { return nthreads; }
  unsigned char* smem() const { return shared; }

  // file, line: the call site, the bank audit's name for the phase (GCC and Clang fill them in).
  template <class F> void each_thread(F&& f, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    rec->set_site(file, line);
    if (san) san->begin_phase();
    for (int t = 0; t < nthreads; ++t) {
      rec->begin_thread(t);
      if (san) san->begin_thread(t);
      f(t);
    }
    rec->end_phase();
    if (san) san->end_phase();
  }
  void sync() {
    if (san) san->barrier();
  }
  template <class T> CheckedPtr<T> buffer(T* p) { return {p, san, rec->auditing() ? rec : nullptr}; }

  template <class S> CpuThreadState<S> thread_state() { return {std::vector<S>(nthreads)}; }

  // All lanes of each warp get op over the warp's 32 values, combined as the xor butterfly
  // of the CUDA shuffles combines them.
  template <class S, class Get, class Op> void warp_reduce(CpuThreadState<S>& st, Get&& get, Op&& op) {
    using V = std::decay_t<decltype(get(st[0]))>;
    for (int w0 = 0; w0 < nthreads; w0 += 32) {
      V v[32], nv[32];
      for (int l = 0; l < 32; ++l) v[l] = get(st[w0 + l]);
      for (int o = 16; o >= 1; o /= 2) {
        for (int l = 0; l < 32; ++l) nv[l] = op(v[l], v[l ^ o]);
        std::copy(nv, nv + 32, v);
      }
      for (int l = 0; l < 32; ++l) get(st[w0 + l]) = v[l];
    }
  }

  void check(const void* p, int64_t bytes, bool write) {
    if (san) san->access(p, bytes, write);
  }
  // A vector access on the GPU is one load or store of V * sizeof(T) bytes (VecWord), which
  // faults unless the address is a multiple of that size: raised here too, sanitizer or not.
  template <int V, class T> static void check_aligned(const void* p) {
    if (reinterpret_cast<uintptr_t>(p) % (V * sizeof(T)) != 0)
      throw std::logic_error("block sanitizer: alignment: a " + std::to_string(V * sizeof(T)) +
                             "-byte vector access at an address not a multiple of its size (a misaligned-address "
                             "fault on a GPU)");
  }
  template <class T> T load(const T* p) {
    check(p, sizeof(T), false);
    rec->access(p, sizeof(T), false);
    return *p;
  }
  template <class T> void store(T* p, T v) {
    check(p, sizeof(T), true);
    rec->access(p, sizeof(T), true);
    *p = v;
  }
  // One lane's vector access of V elements (128 bits when V * sizeof(T) == 16).
  template <int V, class T> void load_vec(const T* p, T* out) {
    check_aligned<V, T>(p);
    check(p, V * sizeof(T), false);
    rec->access(p, V * sizeof(T), false);
    std::memcpy(out, p, V * sizeof(T));
  }
  template <int V, class T> void store_vec(T* p, const T* v) {
    check_aligned<V, T>(p);
    check(p, V * sizeof(T), true);
    rec->access(p, V * sizeof(T), true);
    std::memcpy(p, v, V * sizeof(T));
  }
  // One vector from global memory into the staged tile (a global read, a shared write). On
  // the GPU the copy is asynchronous: its bytes may be read only after copy_wait() (and, by
  // other threads, a barrier); the sanitizer reports an earlier read.
  template <int V, class T> void copy_vec(const T* src, T* dst) {
    check_aligned<V, T>(src);
    check_aligned<V, T>(dst);
    check(src, V * sizeof(T), false);
    if (san) san->async_copy(dst, V * sizeof(T));
    rec->access(src, V * sizeof(T), false);
    rec->access(dst, V * sizeof(T), true);
    std::memcpy(dst, src, V * sizeof(T));
  }
  void copy_wait() {
    if (san) san->async_wait();
  }
  // Block scope, like copy_wait: every thread closes its group of copies (cp.async.commit_group)
  // / waits until at most `newer` committed groups are in flight (cp.async.wait_group).
  void copy_commit() {
    if (san) san->async_commit();
  }
  void copy_wait_prior(int newer) {
    if (san) san->async_wait(newer);
  }
  // A lane predicated off in an unrolled loop: its access slot passes, so the next access of
  // every lane of the warp is still the same warp-wide instruction.
  void skip_access() { rec->skip_access(); }
};

}  // namespace sam_fused::block
