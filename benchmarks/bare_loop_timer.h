// The timing harness of the bare-loop benchmarks (benchmarks/cpu_*.cpp): each case's best time
// over interleaved rounds (a few calls of every case per round, so the VM's drift hits every case
// alike). before(call) runs untimed before each call, numbered across all cases, e.g. to point
// the loops at the next copy of their inputs.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstddef>

struct BareLoopCase {
  const char* name;
  void (*run)();
  double best = 1e9;  // seconds
};

template <size_t K, class Before>
void time_interleaved(BareLoopCase (&cases)[K], int rounds, int calls, Before&& before) {
  int call = 0;
  for (int round = 0; round < rounds; ++round)
    for (auto& c : cases)
      for (int i = 0; i < calls; ++i) {
        before(call++);
        const auto t0 = std::chrono::steady_clock::now();
        c.run();
        c.best = std::min(c.best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
}
template <size_t K> void time_interleaved(BareLoopCase (&cases)[K], int rounds, int calls) {
  time_interleaved(cases, rounds, calls, [](int) {});
}
