// C++ test of the CUDA kernels on a GPU (CTest target hipnnts_cuda_tests; exits 77, "skipped",
// without a device). envsum and the lmax = 2 interaction forward against plain host loops of the
// SPEC formulas on a small random problem, float64. The full suite against the PyTorch reference
// (every op and derivative level) is tests/test_cuda.py.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "../kernels/launch.h"

using hipnnts::index_t;

#define CHECK_CUDA(call)                                                              \
    do {                                                                              \
        const cudaError_t err_ = (call);                                              \
        if (err_ != cudaSuccess) {                                                    \
            std::fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(err_));         \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

template <class T>
T* to_device(const std::vector<T>& host) {
    T* ptr = nullptr;
    cudaMalloc(&ptr, host.size() * sizeof(T) + 1);
    cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
    return ptr;
}

template <class T>
std::vector<T> to_host(const T* ptr, size_t n) {
    std::vector<T> host(n);
    cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost);
    return host;
}

int main() {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::puts("no CUDA device: skipped");
        return 77;
    }
    const int N = 7, P = 40, nu = 5, F = 33;
    const double cutoff = 3.5, eps = 1e-6, pi = 3.14159265358979323846;
    std::mt19937 gen(1);
    std::uniform_int_distribution<int> atom(0, N - 2);  // atom N - 1 has no pairs
    std::normal_distribution<double> normal;
    std::vector<index_t> first(P), second(P);
    std::vector<double> coord(3 * P), Y(N * nu * F), mu(nu), sigma(nu), lam1(F), lam2(F), sens(P * nu), feat(N * F);
    for (int p = 0; p < P; ++p) {
        first[p] = atom(gen);
        second[p] = atom(gen);
        for (int x = 0; x < 3; ++x) coord[3 * p + x] = 1.4 * normal(gen);
    }
    for (auto* v : {&Y, &lam1, &lam2, &sens, &feat})
        for (auto& x : *v) x = normal(gen);
    for (int n = 0; n < nu; ++n) {
        mu[n] = 0.8 + 0.4 * n;
        sigma[n] = 1.5 + 0.3 * n;
    }
    // CSR by receiver (stable)
    std::vector<index_t> order, ptr(N + 1, 0);
    for (int i = 0; i < N; ++i) {
        ptr[i] = index_t(order.size());
        for (int p = 0; p < P; ++p)
            if (first[p] == i) order.push_back(p);
    }
    ptr[N] = P;
    std::vector<index_t> sender_order, sender_ptr(N + 1, 0);  // and by sender
    for (int j = 0; j < N; ++j) {
        sender_ptr[j] = index_t(sender_order.size());
        for (int p = 0; p < P; ++p)
            if (second[p] == j) sender_order.push_back(p);
    }
    sender_ptr[N] = P;

    // host loops of the SPEC formulas
    std::vector<double> env_ref(N * nu * F, 0.0), out_ref(N * F, 0.0), m(N * 9 * F, 0.0);
    for (int p = 0; p < P; ++p) {
        const double x = coord[3 * p], y = coord[3 * p + 1], z = coord[3 * p + 2], r = std::sqrt(x * x + y * y + z * z);
        const double u[3] = {x / r, y / r, z / r};
        const double a[9] = {1, u[0], u[1], u[2], u[0] * u[0] - 1.0 / 3, u[0] * u[1], u[0] * u[2], u[1] * u[1] - 1.0 / 3,
                             u[1] * u[2]};
        const double phi = r <= cutoff ? std::pow(std::cos(pi * r / (2 * cutoff)), 2) : 0.0;
        for (int n = 0; n < nu; ++n) {
            const double d = 1 / r - 1 / mu[n], s = std::exp(-0.5 * sigma[n] * sigma[n] * d * d) * phi;
            for (int f = 0; f < F; ++f) {
                env_ref[(first[p] * nu + n) * F + f] += sens[p * nu + n] * feat[second[p] * F + f];
                for (int c = 0; c < 9; ++c) m[(first[p] * 9 + c) * F + f] += a[c] * s * Y[(second[p] * nu + n) * F + f];
            }
        }
    }
    for (int i = 0; i < N; ++i)
        for (int f = 0; f < F; ++f) {
            const double* mi = &m[i * 9 * F];
            double v2 = 0, q2 = 0;
            for (int c = 1; c < 4; ++c) v2 += mi[c * F + f] * mi[c * F + f];
            for (int c = 4; c < 9; ++c) q2 += mi[c * F + f] * mi[c * F + f];
            q2 += mi[4 * F + f] * mi[7 * F + f];
            out_ref[i * F + f] = mi[f] + lam1[f] * std::sqrt(v2 + eps) + lam2[f] * std::sqrt(2 * q2 + eps);
        }

    double* d_env = nullptr;
    double* d_out = nullptr;
    CHECK_CUDA(cudaMalloc(&d_env, env_ref.size() * sizeof(double)));
    CHECK_CUDA(cudaMalloc(&d_out, out_ref.size() * sizeof(double)));
    const hipnnts::Segments receivers{to_device(order), to_device(ptr)};
    const index_t* d_second = to_device(second);
    if (const char* err = hipnnts::envsum(to_device(sens), to_device(feat), d_second, receivers, N, nu, F, d_env,
                                          nullptr)) {
        std::fprintf(stderr, "envsum: %s\n", err);
        return 1;
    }
    const hipnnts::Segments senders{to_device(sender_order), to_device(sender_ptr)};
    const hipnnts::InteractionInputs<double> in{to_device(Y), to_device(coord), receivers, senders,
                                                to_device(mu), to_device(sigma), to_device(lam1), to_device(lam2), N, P,
                                                nu, F, 2, cutoff, eps};
    double* d_workspace = nullptr;
    CHECK_CUDA(cudaMalloc(&d_workspace, hipnnts::interaction_workspace(hipnnts::Level::forward, N, P, nu, F, 2) * sizeof(double)));
    if (const char* err = hipnnts::interaction_forward(in, d_out, d_workspace, nullptr)) {
        std::fprintf(stderr, "interaction_forward: %s\n", err);
        return 1;
    }
    CHECK_CUDA(cudaDeviceSynchronize());
    int failures = 0;
    const auto compare = [&](const char* name, const std::vector<double>& got, const std::vector<double>& want) {
        double worst = 0, scale = 0;
        for (size_t k = 0; k < want.size(); ++k) {
            worst = std::fmax(worst, std::fabs(got[k] - want[k]));
            scale = std::fmax(scale, std::fabs(want[k]));
        }
        const bool ok = worst <= 1e-11 * scale;
        std::printf("%s: max abs error %.3g (scale %.3g) %s\n", name, worst, scale, ok ? "ok" : "FAILED");
        failures += !ok;
    };
    compare("envsum", to_host(d_env, env_ref.size()), env_ref);
    compare("interaction_forward lmax 2", to_host(d_out, out_ref.size()), out_ref);
    return failures ? 1 : 0;
}
