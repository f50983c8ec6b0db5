// C entry points of the CPU kernels (loaded with ctypes by hipnnts_kernels/cpu_backend.py): picks the
// kernels built for the widest instruction set this CPU runs, and runs their parallel loops on the
// OpenMP team torch itself uses (its runtime's GOMP_parallel, handed over by the Python side), so
// they do not compete with torch's spinning OpenMP threads; without it, on threads started per
// call. Compiled for the baseline instruction set.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <thread>
#include <vector>

#include "api.h"

extern "C" const hipnnts_cpu_table hipnnts_cpu_kernels_default;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
extern "C" const hipnnts_cpu_table hipnnts_cpu_kernels_avx2;
#endif

namespace {

// Below this many multiply-adds per thread, a thread costs more than it saves: starting one of our
// own takes about 100 us, waking torch's OpenMP team a few.
constexpr double kWorkPerOwnThread = 2.0e6;
constexpr double kWorkPerTeamThread = 5.0e4;

// Chunk boundaries of [0, n) for `parts` threads: equal item counts, or equal segment lengths.
std::vector<hipnnts_index> split(hipnnts_index n, const hipnnts_index* segments, int parts) {
    std::vector<hipnnts_index> bounds(parts + 1, n);
    bounds[0] = 0;
    for (int t = 1; t < parts; ++t) {
        if (segments == nullptr) {
            bounds[t] = n * t / parts;
            continue;
        }
        const hipnnts_index target = segments[0] + (segments[n] - segments[0]) * t / parts;
        hipnnts_index lo = bounds[t - 1], hi = n;  // first item whose segment starts at or after target
        while (lo < hi) {
            const hipnnts_index mid = lo + (hi - lo) / 2;
            if (segments[mid] < target) lo = mid + 1; else hi = mid;
        }
        bounds[t] = lo;
    }
    return bounds;
}

// The OpenMP runtime torch runs on (GNU libgomp, or LLVM's libomp through its GOMP entry points).
struct OpenMP {
    void (*parallel)(void (*)(void*), void*, unsigned, unsigned) = nullptr;
    int (*thread_num)() = nullptr;
    int (*num_threads)() = nullptr;
} openmp;

struct Team {
    void (*body)(void*, hipnnts_index, hipnnts_index);
    void* context;
    const hipnnts_index* bounds;
    int parts;
};

// Each thread of the team runs the chunks of its number, modulo the team's size (a nested region may
// get fewer threads than asked for); the chunks are fixed by `parts` alone.
void team_member(void* data) {
    const Team& team = *static_cast<const Team*>(data);
    const int size = openmp.num_threads();
    for (int c = openmp.thread_num(); c < team.parts; c += size)
        if (team.bounds[c] < team.bounds[c + 1]) team.body(team.context, team.bounds[c], team.bounds[c + 1]);
}

void run(const hipnnts_cpu_context* self, hipnnts_index n, const hipnnts_index* segments, double work,
         void (*body)(void*, hipnnts_index, hipnnts_index), void* context) {
    if (n <= 0) return;
    double wanted = work / (openmp.parallel ? kWorkPerTeamThread : kWorkPerOwnThread);
    int parts = self->threads;
    if (wanted < parts) parts = wanted < 1 ? 1 : static_cast<int>(wanted);
    if (parts > n) parts = static_cast<int>(n);
    if (parts <= 1) {
        body(context, 0, n);
        return;
    }
    const std::vector<hipnnts_index> bounds = split(n, segments, parts);
    if (openmp.parallel) {
        Team team{body, context, bounds.data(), parts};
        openmp.parallel(team_member, &team, static_cast<unsigned>(parts), 0);
        return;
    }
    std::vector<std::thread> workers;
    workers.reserve(parts - 1);
    for (int t = 1; t < parts; ++t)
        if (bounds[t] < bounds[t + 1]) workers.emplace_back(body, context, bounds[t], bounds[t + 1]);
    body(context, bounds[0], bounds[1]);
    for (std::thread& worker : workers) worker.join();
}

// One workspace per calling thread, kept between calls up to kKeepBytes (a training step calls the
// kernels with the same sizes again and again; fresh memory would be faulted in page by page).
constexpr hipnnts_index kKeepBytes = hipnnts_index(512) << 20;

struct Arena {
    void* data = nullptr;
    hipnnts_index bytes = 0;
    ~Arena() { free(data); }
    void* get(hipnnts_index wanted) {
        if (wanted > bytes) {
            free(data);
            data = malloc(static_cast<size_t>(wanted));
            bytes = data ? wanted : 0;
        }
        return data;
    }
    void trim() {
        if (bytes > kKeepBytes) {
            free(data);
            data = nullptr;
            bytes = 0;
        }
    }
};

thread_local Arena arena;

void* workspace(const hipnnts_cpu_context*, hipnnts_index bytes) { return arena.get(bytes > 0 ? bytes : 1); }

// A call's context; on leaving, a workspace too large to keep is freed.
struct Call {
    hipnnts_cpu_context context;
    explicit Call(int threads) : context{run, workspace, threads < 1 ? 1 : threads} {}
    ~Call() { arena.trim(); }
};

// The kernels this CPU runs, widest instruction set first.
int supported(const hipnnts_cpu_table** out) {
    int n = 0;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2) out[n++] = &hipnnts_cpu_kernels_avx2;
#endif
    out[n++] = &hipnnts_cpu_kernels_default;
    return n;
}

const hipnnts_cpu_table* choose() {
    const hipnnts_cpu_table* tables[2];
    supported(tables);
    return tables[0];
}

const hipnnts_cpu_table* kTable = choose();

}  // namespace

extern "C" {

// Run the parallel loops on this OpenMP runtime's team: GOMP_parallel, omp_get_thread_num and
// omp_get_num_threads of the runtime torch uses (null: threads of our own).
void hipnnts_cpu_use_openmp(void* parallel, void* thread_num, void* num_threads) {
    if (parallel && thread_num && num_threads) {
        openmp.parallel = reinterpret_cast<void (*)(void (*)(void*), void*, unsigned, unsigned)>(parallel);
        openmp.thread_num = reinterpret_cast<int (*)()>(thread_num);
        openmp.num_threads = reinterpret_cast<int (*)()>(num_threads);
    } else {
        openmp = OpenMP{};
    }
}

// Which kernels run here: "avx2" or "default".
const char* hipnnts_cpu_isa() { return kTable->name; }

// The instruction sets this CPU runs, widest first, separated by spaces.
const char* hipnnts_cpu_supported_isas() {
    static char names[64];
    const hipnnts_cpu_table* tables[2];
    const int n = supported(tables);
    names[0] = 0;
    for (int i = 0; i < n; ++i) {
        if (i) strcat(names, " ");
        strcat(names, tables[i]->name);
    }
    return names;
}

// Run the kernels built for `name` (one of hipnnts_cpu_supported_isas); 0 if this CPU cannot.
int hipnnts_cpu_use_isa(const char* name) {
    const hipnnts_cpu_table* tables[2];
    const int n = supported(tables);
    for (int i = 0; i < n; ++i)
        if (strcmp(tables[i]->name, name) == 0) {
            kTable = tables[i];
            return 1;
        }
    return 0;
}

// The sizes of the argument packs, checked against the ctypes mirrors at load.
int64_t hipnnts_cpu_struct_size(int which) {
    switch (which) {
        case 0: return sizeof(hipnnts_cpu_inputs);
        case 1: return sizeof(hipnnts_cpu_cotangents);
        case 2: return sizeof(hipnnts_cpu_gradients);
        case 3: return sizeof(hipnnts_cpu_family);
        default: return -1;
    }
}

const char* hipnnts_cpu_interaction_forward(const hipnnts_cpu_inputs* in, void* out, int threads) {
    const Call par(threads);
    return kTable->interaction_forward(in, out, &par.context);
}

const char* hipnnts_cpu_interaction_backward(const hipnnts_cpu_inputs* in, const void* grad_out,
                                             const hipnnts_cpu_gradients* gradients, int threads) {
    const Call par(threads);
    return kTable->interaction_backward(in, grad_out, gradients, &par.context);
}

const char* hipnnts_cpu_interaction_double_backward(const hipnnts_cpu_inputs* in,
                                                    const hipnnts_cpu_cotangents* cotangents, const void* grad_out,
                                                    const hipnnts_cpu_gradients* gradients, int threads) {
    const Call par(threads);
    return kTable->interaction_double_backward(in, cotangents, grad_out, gradients, &par.context);
}

const char* hipnnts_cpu_envsum(const hipnnts_cpu_family* args, int threads) {
    const Call par(threads);
    return kTable->envsum(args, &par.context);
}

const char* hipnnts_cpu_sensesum(const hipnnts_cpu_family* args, int threads) {
    const Call par(threads);
    return kTable->sensesum(args, &par.context);
}

const char* hipnnts_cpu_featsum(const hipnnts_cpu_family* args, int threads) {
    const Call par(threads);
    return kTable->featsum(args, &par.context);
}

}  // extern "C"
