// LayerNorm over the last axis and its gradient as MindSpore aot custom ops for CPU. MindSpore's CPU LayerNorm and
// the elementwise ops of a written-out backward each take their own pass over (B, T, C) memory; here a row of C
// floats stays in L1 while its statistics, its output and its gradient are computed.
//
//   ms_vit_layer_norm(x [..., C], gamma [C], beta [C], eps [1]) -> y [..., C], mean [..., 1], variance [..., 1]
//   ms_vit_layer_norm_grad(x, dy, gamma, mean, variance, eps [1]) -> dx [..., C], dgamma [C], dbeta [C]
//
// mean and variance have the shapes and meaning of ops.LayerNorm(-1, -1, eps)'s outputs on CPU (variance biased,
// without eps), so the kernel is a drop-in for the cell that wraps it. epsilon travels as a one-element tensor:
// an aot op's attributes reach C++ only through MindSpore's AotExtra class, whose layout is not a stable ABI.
//
// The row sums use "omp simd" reductions (built with -fopenmp-simd): without -ffast-math GCC keeps a float sum in
// source order, one scalar add at a time; the reduction pragma allows lane-wise partial sums for these loops only.
// The variance is the mean of squared deviations from the already computed mean (two passes over an L1-resident
// row), not E[x^2] - mean^2, which cancels when |mean| >> std.
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

void forward_rows(const float* x, const float* gamma, const float* beta, float eps, float* y, float* mean,
                  float* var, int64_t c, int64_t begin, int64_t end) {
    const float inv_c = 1.0f / static_cast<float>(c);
    for (int64_t r = begin; r < end; ++r) {
        const float* xr = x + r * c;
        float* yr = y + r * c;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < c; ++i) sum += xr[i];
        const float mu = sum * inv_c;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < c; ++i) {
            const float d = xr[i] - mu;
            ss += d * d;
        }
        const float v = ss * inv_c;
        const float rstd = 1.0f / std::sqrt(v + eps);
#pragma omp simd
        for (int64_t i = 0; i < c; ++i) yr[i] = (xr[i] - mu) * rstd * gamma[i] + beta[i];
        mean[r] = mu;
        var[r] = v;
    }
}

// dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy gamma, xhat = (x - mean) rstd; this thread's rows add
// dy xhat and dy into its own dgamma / dbeta partials.
void grad_rows(const float* x, const float* dy, const float* gamma, const float* mean, const float* var, float eps,
               float* dx, float* dgamma, float* dbeta, int64_t c, int64_t begin, int64_t end) {
    const float inv_c = 1.0f / static_cast<float>(c);
    for (int64_t r = begin; r < end; ++r) {
        const float* xr = x + r * c;
        const float* dyr = dy + r * c;
        float* dxr = dx + r * c;
        const float mu = mean[r];
        const float rstd = 1.0f / std::sqrt(var[r] + eps);
        float sg = 0.0f, sgx = 0.0f;
#pragma omp simd reduction(+ : sg, sgx)
        for (int64_t i = 0; i < c; ++i) {
            const float xhat = (xr[i] - mu) * rstd;
            const float g = dyr[i] * gamma[i];
            sg += g;
            sgx += g * xhat;
            dgamma[i] += dyr[i] * xhat;
            dbeta[i] += dyr[i];
        }
        const float mg = sg * inv_c, mgx = sgx * inv_c;
#pragma omp simd
        for (int64_t i = 0; i < c; ++i) {
            const float xhat = (xr[i] - mu) * rstd;
            dxr[i] = rstd * (dyr[i] * gamma[i] - mg - xhat * mgx);
        }
    }
}

// How many threads for `rows` rows of `c` floats: memory-bound passes over (B, T, C) need more than one core to
// reach the memory bandwidth, while a thread start (tens of microseconds) outweighs the work of a small tensor.
int64_t thread_count(int64_t rows, int64_t c) {
    const int64_t grain = 1 << 15;  // floats per thread, at least
    const int64_t by_size = std::max<int64_t>(1, rows * c / grain);
    const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
    return std::max<int64_t>(1, std::min<int64_t>({cores, by_size, rows}));
}

// Run f(t, begin, end) over `threads` contiguous row ranges, range t on thread t (range 0 on the caller). The split
// depends only on rows and threads, so the per-thread partials, and their sum, are the same on every call.
template <class F>
void parallel_rows(int64_t rows, int64_t threads, F f) {
    const int64_t chunk = (rows + threads - 1) / threads;
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < threads; ++t) {
        const int64_t b = t * chunk, e = std::min(rows, b + chunk);
        if (b < e) pool.emplace_back(f, t, b, e);
    }
    f(int64_t{0}, int64_t{0}, std::min(rows, chunk));
    for (auto& th : pool) th.join();
}

}  // namespace

extern "C" int ms_vit_layer_norm(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                                 void*) {
    if (nparam != 7 || !all_float32(nparam, dtypes) || ndims[0] < 1) return 1;
    const int64_t c = shapes[0][ndims[0] - 1];
    if (c <= 0 || count(ndims[1], shapes[1]) != c || count(ndims[2], shapes[2]) != c) return 1;
    const int64_t rows = count(ndims[0], shapes[0]) / c;
    const float* x = static_cast<const float*>(params[0]);
    const float* gamma = static_cast<const float*>(params[1]);
    const float* beta = static_cast<const float*>(params[2]);
    const float eps = *static_cast<const float*>(params[3]);
    float* y = static_cast<float*>(params[4]);
    float* mean = static_cast<float*>(params[5]);
    float* var = static_cast<float*>(params[6]);
    parallel_rows(rows, thread_count(rows, c), [=](int64_t, int64_t b, int64_t e) {
        forward_rows(x, gamma, beta, eps, y, mean, var, c, b, e);
    });
    return 0;
}

extern "C" int ms_vit_layer_norm_grad(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                      void*, void*) {
    if (nparam != 9 || !all_float32(nparam, dtypes) || ndims[0] < 1) return 1;
    const int64_t c = shapes[0][ndims[0] - 1];
    if (c <= 0 || count(ndims[2], shapes[2]) != c) return 1;
    const int64_t rows = count(ndims[0], shapes[0]) / c;
    const float* x = static_cast<const float*>(params[0]);
    const float* dy = static_cast<const float*>(params[1]);
    const float* gamma = static_cast<const float*>(params[2]);
    const float* mean = static_cast<const float*>(params[3]);
    const float* var = static_cast<const float*>(params[4]);
    const float eps = *static_cast<const float*>(params[5]);
    float* dx = static_cast<float*>(params[6]);
    float* dgamma = static_cast<float*>(params[7]);
    float* dbeta = static_cast<float*>(params[8]);
    const int64_t threads = thread_count(rows, c);
    // Thread 0 sums straight into the outputs; the others into their own rows of `partial`, added afterwards in
    // thread order, so that dgamma and dbeta do not depend on which thread finishes first.
    std::fill(dgamma, dgamma + c, 0.0f);
    std::fill(dbeta, dbeta + c, 0.0f);
    std::vector<float> partial(static_cast<size_t>(2 * c * (threads - 1)), 0.0f);
    float* p = partial.data();
    parallel_rows(rows, threads, [=](int64_t t, int64_t b, int64_t e) {
        float* dg = t == 0 ? dgamma : p + 2 * c * (t - 1);
        float* db = t == 0 ? dbeta : dg + c;
        grad_rows(x, dy, gamma, mean, var, eps, dx, dg, db, c, b, e);
    });
    for (int64_t t = 1; t < threads; ++t) {
        const float* dg = p + 2 * c * (t - 1);
        const float* db = dg + c;
        for (int64_t i = 0; i < c; ++i) {
            dgamma[i] += dg[i];
            dbeta[i] += db[i];
        }
    }
    return 0;
}
