// The exact (erf) GELU and its gradient as MindSpore aot custom ops for CPU: one pass over memory each, where
// MindSpore's unfused elementwise ops take one pass per operation and its own erf kernel is slow.
//
//   ms_vit_gelu_erf(x) -> y            y  = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2
//   ms_vit_gelu_erf_grad(x, dy) -> dx  dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
//   ms_vit_gelu_tanh(x), ms_vit_gelu_tanh_grad(x, dy): the tanh approximation and its gradient, likewise
//
// Phi comes from a fit of erfc with relative error (lower_tail), exp from a Cephes-style polynomial after range
// reduction; both are branch-free so that the compiler vectorises the loops. tests/test_gelu.py checks both ops
// against float64 references.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>


#include "aot_args.h"

using ms_vit_aot::all_float32;
using ms_vit_aot::count;

namespace {

// exp(v) for v >= -87 (below, the result is clamped to exp(-87)): v = n ln2 + r, |r| <= ln2 / 2, exp(r) by a
// degree-7 polynomial, 2^n put into the exponent bits.
inline float exp_clamped(float v) {
    v = std::max(v, -87.0f);
    // Round to nearest by adding and subtracting 1.5 * 2^23 (std::nearbyint is a library call that blocks
    // vectorisation without SSE4.1); exact for |n| < 2^22, far beyond the clamped range.
    const float n = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = (v - n * 0.693359375f) + n * 2.12194440e-4f;
    float e = 1.9875691500e-4f;
    e = e * r + 1.3981999507e-3f;
    e = e * r + 8.3334519073e-3f;
    e = e * r + 4.1665795894e-2f;
    e = e * r + 1.6666665459e-1f;
    e = e * r + 5.0000001201e-1f;
    e = e * r * r + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

// Phi(-a) = erfc(a / sqrt 2) / 2 for a >= 0, by the Chebyshev fit of erfc in Numerical Recipes (erfcc), whose error
// is relative: the small tail keeps its digits, where 1 - Phi(a) computed from an erf
// would cancel them.
inline float lower_tail(float a) {
    const float z = a * 0.70710678118654752f;
    const float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t + -0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t + -1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t + -0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t + -1.26551223f;
    return 0.5f * t * exp_clamped(p - z * z);
}

void gelu_range(const float* x, float* y, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
        // x Phi(x) = max(x, 0) - |x| Phi(-|x|): the small term carries the approximation's error, relative.
        const float v = x[i];
        const float a = std::fabs(v);
        y[i] = std::max(v, 0.0f) - a * lower_tail(a);
    }
}

void grad_range(const float* x, const float* dy, float* dx, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
        const float v = x[i];
        const float tail = lower_tail(std::fabs(v));
        const float cdf = v > 0.0f ? 1.0f - tail : tail;
        const float pdf = 0.39894228040143268f * exp_clamped(-0.5f * v * v);
        dx[i] = dy[i] * (cdf + v * pdf);
    }
}

// The tanh form, 0.5 x (1 + tanh(u)) = x s(z) with s the logistic sigmoid and z = 2u = x (a + b x^2): the same
// function as the model's SigmoidGELU (ms_vit/models/layers.py), in one pass. exp's argument is kept below 88,
// where exp_clamped's exponent bits would overflow; there s is 0 to fp32 precision anyway.
constexpr float kTanhA = 1.5957691216057308f;        // 2 sqrt(2 / pi)
constexpr float kTanhB = 1.5957691216057308f * 0.044715f;

inline float logistic(float z) { return 1.0f / (1.0f + exp_clamped(std::min(-z, 88.0f))); }

void gelu_tanh_range(const float* x, float* y, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
        const float v = x[i];
        y[i] = v * logistic(v * (kTanhA + kTanhB * v * v));
    }
}

// d/dx [x s(z)] = s (1 + x (1 - s) z'), z' = a + 3 b x^2, with 1 - s = s e^-z: 1 - s itself would cancel to a
// few bits where s is near 1.
void gelu_tanh_grad_range(const float* x, const float* dy, float* dx, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
        const float v = x[i], v2 = v * v;
        const float e = exp_clamped(std::min(-v * (kTanhA + kTanhB * v2), 88.0f));
        const float s = 1.0f / (1.0f + e);
        dx[i] = dy[i] * (s * (1.0f + v * (s * e) * (kTanhA + 3.0f * kTanhB * v2)));
    }
}

// Split [0, n) over the machine's cores: elementwise work on (B, T, mlp_dim) tensors is memory-bound, and one core
// does not saturate the memory bandwidth. Small tensors stay on the calling thread.
template <class F>
void parallel(int64_t n, F f) {
    const int64_t grain = 1 << 16;
    int64_t threads = std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), (n + grain - 1) / grain);
    if (threads <= 1) {
        f(0, n);
        return;
    }
    const int64_t chunk = ((n + threads - 1) / threads + 15) / 16 * 16;
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < threads; ++t) {
        const int64_t b = t * chunk, e = std::min(n, b + chunk);
        if (b < e) pool.emplace_back(f, b, e);
    }
    f(0, std::min(n, chunk));
    for (auto& th : pool) th.join();
}

}  // namespace

extern "C" int ms_vit_gelu_erf(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                               void*) {
    if (nparam != 2 || !all_float32(nparam, dtypes)) return 1;
    const float* x = static_cast<const float*>(params[0]);
    float* y = static_cast<float*>(params[1]);
    parallel(count(ndims[0], shapes[0]), [=](int64_t b, int64_t e) { gelu_range(x, y, b, e); });
    return 0;
}

extern "C" int ms_vit_gelu_erf_grad(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                    void*, void*) {
    if (nparam != 3 || !all_float32(nparam, dtypes)) return 1;
    const float* x = static_cast<const float*>(params[0]);
    const float* dy = static_cast<const float*>(params[1]);
    float* dx = static_cast<float*>(params[2]);
    parallel(count(ndims[0], shapes[0]), [=](int64_t b, int64_t e) { grad_range(x, dy, dx, b, e); });
    return 0;
}

extern "C" int ms_vit_gelu_tanh(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                                void*) {
    if (nparam != 2 || !all_float32(nparam, dtypes)) return 1;
    const float* x = static_cast<const float*>(params[0]);
    float* y = static_cast<float*>(params[1]);
    parallel(count(ndims[0], shapes[0]), [=](int64_t b, int64_t e) { gelu_tanh_range(x, y, b, e); });
    return 0;
}

extern "C" int ms_vit_gelu_tanh_grad(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                     void*, void*) {
    if (nparam != 3 || !all_float32(nparam, dtypes)) return 1;
    const float* x = static_cast<const float*>(params[0]);
    const float* dy = static_cast<const float*>(params[1]);
    float* dx = static_cast<float*>(params[2]);
    parallel(count(ndims[0], shapes[0]), [=](int64_t b, int64_t e) { gelu_tanh_grad_range(x, dy, dx, b, e); });
    return 0;
}
