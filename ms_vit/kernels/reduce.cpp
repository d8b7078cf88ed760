// The sum of squares of a float32 tensor as a MindSpore aot op for CPU: the global gradient norm of every
// optimizer step. MindSpore's CPU ReduceSum over a whole tensor runs at a few ns per element, slower than reading
// the tensor; this reads it once, on every core.
//
//   ms_vit_sum_squares(x) -> [1] float32
//
// Each thread sums a fixed slice in double; the slices are added in order: the result does not depend on timing.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// Eight float lanes accumulated separately (vectorisable without -ffast-math), widened to double per block so
// that ViT-B's 86M squares lose no digits that matter to a norm.
double slice_sum(const float* x, int64_t n) {
    double total = 0.0;
    const int64_t block = 4096;
    for (int64_t start = 0; start < n; start += block) {
        const int64_t end = std::min(n, start + block);
        float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t i = start;
        for (; i + 8 <= end; i += 8)
            for (int j = 0; j < 8; ++j) lanes[j] += x[i + j] * x[i + j];
        double part = 0.0;
        for (int j = 0; j < 8; ++j) part += lanes[j];
        for (; i < end; ++i) part += static_cast<double>(x[i]) * x[i];
        total += part;
    }
    return total;
}

}  // namespace

extern "C" int ms_vit_sum_squares(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                  void*, void*) {
    if (nparam != 2 || std::strcmp(dtypes[0], "float32") != 0 || std::strcmp(dtypes[1], "float32") != 0) return 1;
    int64_t n = 1;
    for (int d = 0; d < ndims[0]; ++d) n *= shapes[0][d];
    const float* x = static_cast<const float*>(params[0]);
    const int64_t grain = 1 << 18;
    const int threads = static_cast<int>(
        std::max<int64_t>(1, std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), n / grain)));
    std::vector<double> parts(threads, 0.0);
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t)
        pool.emplace_back([&, t] { parts[t] = slice_sum(x + n * t / threads, n * (t + 1) / threads - n * t / threads); });
    parts[0] = slice_sum(x, n / threads);
    for (auto& th : pool) th.join();
    double total = 0.0;
    for (double p : parts) total += p;
    *static_cast<float*>(params[1]) = static_cast<float>(total);
    return 0;
}
