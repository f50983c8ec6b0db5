// The host emulator's memory-traffic model (docs/kernels.md, "Traffic model"). A MODEL of what the
// GPU's memory system sees, not a measurement: GPU measurements (ncu) overrule it.
//
// Kernels reach memory through gptr<T> (global) and sptr<T> (shared) (portable.cuh). In the
// emulator these are pointer wrappers whose element references record every load and store: the
// calling site, the k-th execution of that site by the thread, the address and the size. At the end
// of each block the accesses are grouped as a warp would issue them (the k-th access of each lane at
// one site is one warp-level request) and counted under Nsight Compute's names:
//   - global: requests, bytes requested, 32-B sectors touched (l1tex__t_sectors_pipe_lsu_mem_global_op_ld/st),
//     and the distinct sectors touched in the whole launch (a lower bound of dram__bytes_read/write);
//   - global row requests: those whose lanes (16 or more) access consecutive elements of the
//     launch's floating type (Recorder::row_bytes) in lane order, a feature row, and the most
//     sectors one of them touches per 128 bytes requested (4 for an aligned row of 32 floats, 5 for
//     one that straddles one more sector);
//   - shared: requests, wavefronts (l1tex__data_pipe_lsu_wavefronts_mem_shared) and the
//     conflict-free wavefronts the same request would need (their ratio: bank-conflict ways);
//   - FLOPs counted where the kernels say (HIPNNTS_FLOPS).
// Local variables are registers on the GPU and are not recorded.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "racecheck.h"

namespace hipnnts_emu {
namespace traffic {

enum Space : uint8_t { kGlobal = 0, kShared = 1 };

// Totals of one kernel launch; [space][0 = load, 1 = store].
struct Stats {
    uint64_t blocks = 0, threads_per_block = 0, warps = 0;
    uint64_t requests[2][2] = {}, bytes[2][2] = {};
    uint64_t sectors[2] = {};         // global loads / stores
    uint64_t distinct_bytes[2] = {};  // global loads / stores, 32-B sectors touched at least once x 32
    uint64_t wavefronts[2] = {}, ideal_wavefronts[2] = {};  // shared loads / stores
    uint64_t flops = 0;
    uint64_t row_requests = 0;             // global feature-row requests, loads and stores
    uint64_t row_worst_milli_sectors = 0;  // the most sectors per 128 B requested of one, x 1000
};

struct Event {
    uint64_t key;      // site x 2 + store
    uint32_t k;        // the k-th execution of (site, store) by this thread
    uint16_t lane;
    uint8_t space, bytes;
    uint64_t address;
};

// What one emulator thread records into during a block (kept, and cleared, from block to block).
struct ThreadLog {
    static constexpr unsigned kSlots = 256;  // open addressing; a kernel has far fewer access sites
    std::vector<Event> events;
    uint64_t keys[kSlots] = {};               // (site, store) keys, 0 = empty
    uint32_t counts[kSlots] = {};             // executions so far of each key
    uint64_t flops = 0;
    uint16_t lane = 0;

    uint32_t next(uint64_t key) {
        for (unsigned slot = unsigned(key >> 3) % kSlots;; slot = (slot + 1) % kSlots) {
            if (keys[slot] == key) return counts[slot]++;
            if (keys[slot] == 0) {
                keys[slot] = key;
                counts[slot] = 1;
                return 0;
            }
        }
    }
    void clear() {
        events.clear();
        std::fill(std::begin(keys), std::end(keys), 0);
        flops = 0;
    }
};

inline thread_local ThreadLog* current = nullptr;

__attribute__((noinline)) inline void record(const void* site, const void* address, unsigned bytes, Space space,
                                             bool store) {
    if (racecheck::checker.enabled) racecheck::checker.access(reinterpret_cast<uintptr_t>(address), space, store);
    ThreadLog* log = current;
    if (log == nullptr) return;
    const uint64_t key = reinterpret_cast<uintptr_t>(site) * 2 + (store ? 1 : 0);
    log->events.push_back({key, log->next(key), log->lane, uint8_t(space), uint8_t(bytes),
                           reinterpret_cast<uintptr_t>(address)});
}

inline void count_flops(uint64_t n) {
    if (current != nullptr) current->flops += n;
}

// The model of one launch: per-thread logs of the block in flight, and the launch's totals.
class Recorder {
  public:
    bool enabled = false;
    std::string kernel;  // the launch's name, set by the launcher before it launches
    unsigned row_bytes = 0;  // the launch's floating type's size, likewise (feature rows are of it)
    Stats stats;

    void begin_launch(unsigned threads_per_block) {
        stats = Stats{};
        logs_.clear();
        stats.threads_per_block = threads_per_block;
        sectors_[0].clear();
        sectors_[1].clear();
    }

    std::vector<ThreadLog>& begin_block(unsigned n_threads) {
        if (logs_.size() != n_threads) logs_.assign(n_threads, ThreadLog{});
        for (unsigned t = 0; t < n_threads; ++t) {
            logs_[t].clear();
            logs_[t].lane = uint16_t(t % 32);
        }
        return logs_;
    }

    void end_block() {
        stats.blocks += 1;
        const size_t n = logs_.size();
        for (size_t w = 0; w * 32 < n; ++w) {
            const size_t first = w * 32, lanes = std::min<size_t>(32, n - first);
            stats.warps += 1;
            // Bucket each lane's events by (site, store): a lane's events of one key come in the
            // order of their execution count k, so request k is the k-th event of every lane.
            keys_.clear();
            for (auto& bucket : buckets_)
                for (auto& lane : bucket) lane.clear();
            for (size_t l = 0; l < lanes; ++l) {
                const ThreadLog& log = logs_[first + l];
                stats.flops += log.flops;
                size_t guess = 0;  // program order runs through the sites in turn: try the one after the last
                for (const Event& e : log.events) {
                    size_t b = guess < keys_.size() && keys_[guess] == e.key ? guess : 0;
                    while (b < keys_.size() && keys_[b] != e.key) ++b;
                    guess = b + 1;
                    if (b == keys_.size()) {
                        keys_.push_back(e.key);
                        if (buckets_.size() < keys_.size()) buckets_.emplace_back(32);
                    }
                    buckets_[b][l].push_back(&e);
                }
            }
            for (size_t b = 0; b < keys_.size(); ++b) {
                size_t depth = 0;
                for (size_t l = 0; l < lanes; ++l) depth = std::max(depth, buckets_[b][l].size());
                for (size_t k = 0; k < depth; ++k) {
                    request_.clear();
                    for (size_t l = 0; l < lanes; ++l)
                        if (k < buckets_[b][l].size()) request_.push_back(buckets_[b][l][k]);
                    request();
                }
            }
        }
        for (int s = 0; s < 2; ++s) stats.distinct_bytes[s] = 32 * uint64_t(sectors_[s].size());
    }

  private:
    std::vector<ThreadLog> logs_;
    std::vector<uint64_t> keys_;                              // the warp's (site, store) keys
    std::vector<std::vector<std::vector<const Event*>>> buckets_;  // [key][lane] events in order
    std::vector<const Event*> request_;
    std::vector<uint64_t> scratch_;
    std::unordered_set<uint64_t> sectors_[2];

    // Whether the request is a feature row: 16 or more lanes, each at the element (of the floating
    // type) its lane's distance from the first lane puts it (events come in lane order).
    bool is_row() const {
        const Event& first = *request_.front();
        if (request_.size() < 16 || first.bytes != row_bytes) return false;
        for (const Event* e : request_)
            if (e->bytes != first.bytes ||
                e->address != first.address + uint64_t(e->lane - first.lane) * first.bytes)
                return false;
        return true;
    }

    // One warp-level request: the k-th event of one (site, store) in every lane that has it.
    void request() {
        const Event& first = *request_.front();
        const int space = first.space, store = int(first.key & 1);
        stats.requests[space][store] += 1;
        scratch_.clear();
        const uint64_t unit = space == kGlobal ? 32 : 4;  // sectors, or 4-byte words (banks)
        for (const Event* e : request_) {
            stats.bytes[space][store] += e->bytes;
            for (uint64_t u = e->address / unit; u <= (e->address + e->bytes - 1) / unit; ++u) scratch_.push_back(u);
        }
        std::sort(scratch_.begin(), scratch_.end());
        scratch_.erase(std::unique(scratch_.begin(), scratch_.end()), scratch_.end());
        if (space == kGlobal) {
            stats.sectors[store] += scratch_.size();
            sectors_[store].insert(scratch_.begin(), scratch_.end());
            if (is_row()) {
                stats.row_requests += 1;
                const uint64_t bytes = uint64_t(request_.size()) * first.bytes;
                stats.row_worst_milli_sectors =
                    std::max<uint64_t>(stats.row_worst_milli_sectors, scratch_.size() * 128000 / bytes);
            }
            return;
        }
        unsigned per_bank[32] = {};
        unsigned wavefronts = 1;
        for (uint64_t word : scratch_) wavefronts = std::max(wavefronts, ++per_bank[word % 32]);
        stats.wavefronts[store] += wavefronts;
        stats.ideal_wavefronts[store] += (scratch_.size() + 31) / 32;
    }
};

inline Recorder recorder;
//: The model of every launch since the last take (kernel name, totals), in launch order.
inline std::vector<std::pair<std::string, Stats>> launches;

// An element of global or shared memory: reading it (conversion) or writing it records the access.
template <class T, Space S>
class Ref {
  public:
    using Value = std::remove_const_t<T>;
    explicit Ref(T* p) : p_(p) {}
    __attribute__((noinline)) operator Value() const {
        record(__builtin_return_address(0), p_, sizeof(T), S, false);
        return *p_;
    }
    __attribute__((noinline)) Ref& operator=(const Value& value) {
        record(__builtin_return_address(0), p_, sizeof(T), S, true);
        *p_ = value;
        return *this;
    }
    __attribute__((always_inline)) Ref& operator=(const Ref& other) { return *this = Value(other); }
    __attribute__((noinline)) Ref& operator+=(const Value& value) {
        record(__builtin_return_address(0), p_, sizeof(T), S, false);
        record(__builtin_return_address(0), p_, sizeof(T), S, true);
        *p_ += value;
        return *this;
    }

  private:
    T* p_;
};

// A pointer into global or shared memory (pointer arithmetic as for T*; indexing gives a Ref).
template <class T, Space S>
class Ptr {
  public:
    Ptr(T* p = nullptr) : p_(p) {}  // NOLINT: implicit, as from a raw pointer
    Ptr(std::nullptr_t) : p_(nullptr) {}
    template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
    Ptr(const Ptr<U, S>& other) : p_(other.get()) {}  // NOLINT: T* from U*, e.g. const from non-const

    T* get() const { return p_; }
    Ref<T, S> operator[](int64_t i) const { return Ref<T, S>(p_ + i); }
    Ref<T, S> operator*() const { return Ref<T, S>(p_); }
    Ptr operator+(int64_t i) const { return Ptr(p_ + i); }
    Ptr operator-(int64_t i) const { return Ptr(p_ - i); }
    Ptr& operator+=(int64_t i) {
        p_ += i;
        return *this;
    }
    friend bool operator==(const Ptr& a, std::nullptr_t) { return a.p_ == nullptr; }
    friend bool operator!=(const Ptr& a, std::nullptr_t) { return a.p_ != nullptr; }

  private:
    T* p_;
};

}  // namespace traffic
}  // namespace hipnnts_emu
