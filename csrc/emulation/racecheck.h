// Hazard check of the emulated kernels, in the spirit of compute-sanitizer's racecheck: with it on,
// every global and shared access through gptr / sptr (portable.cuh) is checked against the earlier
// accesses of the same element. Two accesses of which one is a store conflict when
//   - they come from different blocks (global memory: blocks of one launch are unordered), or
//   - from different threads of one block with no __syncthreads() between them (and, for two lanes
//     of one warp, no warp barrier between them either).
// A conflict is a hazard (read-after-write, write-after-write or write-after-read); the kernels'
// rule that every output element has one writer is what it checks in global memory. The emulator
// runs the threads of a block as fibers on one OS thread, so ThreadSanitizer would see no
// concurrency at all: the check follows CUDA's execution model instead.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

namespace hipnnts_emu {
namespace racecheck {

// Where an access happened: block (linear index), thread, and the barrier intervals it fell in.
struct Access {
    uint32_t block, thread, block_epoch, warp_epoch;
};

inline bool conflict(const Access& a, const Access& b) {
    if (a.block != b.block) return true;
    if (a.thread == b.thread || a.block_epoch != b.block_epoch) return false;
    return a.thread / 32 != b.thread / 32 || a.warp_epoch == b.warp_epoch;
}

// One element's history: the last store, and the loads since it (bounded; enough to catch a hazard
// in practice, as every thread that reads an element tends to read it the same way).
struct Cell {
    static constexpr size_t kReads = 64;
    Access store{};
    bool stored = false;
    std::vector<Access> loads;
};

class Checker {
  public:
    bool enabled = false;
    uint64_t hazards = 0;
    std::string first;  // the first hazard, described

    // The state the emulator's scheduler keeps up to date.
    uint32_t block = 0, thread = 0, block_epoch = 0;
    std::vector<uint32_t> warp_epochs;

    void reset() {
        hazards = 0;
        first.clear();
        cells_[0].clear();
        cells_[1].clear();
    }
    void begin_launch(const std::string& kernel, unsigned threads) {
        kernel_ = kernel;
        cells_[0].clear();
        warp_epochs.assign((threads + 31) / 32, 0);
    }
    void begin_block(uint32_t linear_block) {
        block = linear_block;
        block_epoch = 0;
        cells_[1].clear();  // shared memory lives for one block
    }

    void access(uint64_t address, int space, bool store) {
        const Access now{block, thread, block_epoch, warp_epochs.empty() ? 0 : warp_epochs[thread / 32]};
        Cell& cell = cells_[space][address];
        if (cell.stored && conflict(cell.store, now)) report(store ? "write-after-write" : "read-after-write", space,
                                                             cell.store, now);
        if (!store) {
            for (const Access& a : cell.loads)
                if (a.block == now.block && a.thread == now.thread && a.block_epoch == now.block_epoch) return;
            if (cell.loads.size() < Cell::kReads) cell.loads.push_back(now);
            return;
        }
        for (const Access& a : cell.loads)
            if (conflict(a, now)) {
                report("write-after-read", space, a, now);
                break;
            }
        cell.store = now;
        cell.stored = true;
        cell.loads.clear();
    }

  private:
    std::string kernel_;
    std::unordered_map<uint64_t, Cell> cells_[2];  // [global, shared] by address

    void report(const char* what, int space, const Access& a, const Access& b) {
        if (hazards++ > 0) return;
        char text[320];
        std::snprintf(text, sizeof text,
                      "%s: %s hazard in %s memory between block %u thread %u (barrier interval %u) and block %u "
                      "thread %u (barrier interval %u)",
                      kernel_.c_str(), what, space == 0 ? "global" : "shared", a.block, a.thread, a.block_epoch,
                      b.block, b.thread, b.block_epoch);
        first = text;
    }
};

inline Checker checker;

}  // namespace racecheck
}  // namespace hipnnts_emu
