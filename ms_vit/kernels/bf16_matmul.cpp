// bf16 matmul for MindSpore's Custom "aot" ops on CPU, through oneDNN.
//
// MindSpore's CPU MatMul/BatchMatMul refuse bfloat16, and its oneDNN matmul is fixed to f32. Here fp32 (or bf16)
// operands are rounded to bf16 and multiplied by oneDNN's bf16 matmul, which accumulates in fp32 and writes fp32.
//
// One exported entry per transpose pair (nn, nt, tn, tt) instead of an attribute: a Custom op's attributes reach
// an aot kernel only through its `extra` argument, whose layout MindSpore does not document as stable.
//
// A CPU without bf16 support in oneDNN (below AVX-512, e.g. AVX2 alone) has no bf16 matmul at all, not even a
// reference one. There the operands are rounded to bf16 and kept as fp32 for oneDNN's fp32 matmul: a bf16 x bf16
// product is exact in fp32, so the result is that of a bf16 GEMM with fp32 accumulation (summation order aside),
// at fp32 speed. ms_vit_bf16_impl names which of the two a machine gets.
//
// Inside MindSpore the loader resolves libdnnl.so.3 to the copy MindSpore ships (same SONAME, loaded first), a
// newer oneDNN 3.x built for a threadpool runtime, which runs a primitive on one thread unless the stream carries a
// threadpool; stream() gives it one of its own. Outside MindSpore the wheel's OpenMP build is used as is.
//
// The pool's workers block on a condition variable between jobs. OpenMP would be the obvious pool, but MindSpore
// loads libgomp with active waiting, and its spinning workers and MindSpore's own threads then take turns on the
// cores: a small GEMM paid a scheduler time slice per call.
//
// Operands: A is [batch..., M, K] ([batch..., K, M] when A is transposed), B is [batch..., K, N] ([..., N, K]
// when transposed) or 2-D (one matrix for every batch, as a Dense weight); both at most 4-D. Output [batch..., M, N].

#include <dlfcn.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "oneapi/dnnl/dnnl_threadpool_iface.hpp"

namespace {

using dnnl::memory;

// Round-to-nearest-even, as oneDNN's own reorder and NumPy-side tests do; NaN stays a (quiet) NaN.
inline uint16_t to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}

// oneDNN's threadpool interface, synchronous (flags 0: parallel_for returns with the work done). One job at a time;
// the calling thread works too. A parallel_for from inside a job runs inline.
class Pool : public dnnl::threadpool_interop::threadpool_iface {
   public:
    Pool() {
        cpu_set_t set;
        int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                                  : static_cast<int>(std::thread::hardware_concurrency());
        threads_ = std::max(cores, 1);
        for (int i = 1; i < threads_; ++i) std::thread([this] { work(); }).detach();
    }
    int get_num_threads() const override { return threads_; }
    bool get_in_parallel() const override { return inside_; }
    uint64_t get_flags() const override { return 0; }
    void parallel_for(int n, const std::function<void(int, int)>& fn) override {
        if (n <= 1 || threads_ == 1 || inside_) {
            for (int i = 0; i < n; ++i) fn(i, n);
            return;
        }
        std::lock_guard<std::mutex> one_job(job_mutex_);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = &fn;
            total_ = n;
            next_ = 0;
            pending_ = threads_ - 1;
            ++generation_;
        }
        wake_.notify_all();
        run();
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [this] { return pending_ == 0; });
    }

   private:
    void run() {
        inside_ = true;
        for (int i; (i = next_.fetch_add(1)) < total_;) (*job_)(i, total_);
        inside_ = false;
    }
    void work() {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            wake_.wait(lock, [&] { return generation_ != seen; });
            seen = generation_;
            lock.unlock();
            run();
            lock.lock();
            if (--pending_ == 0) done_.notify_one();
        }
    }
    int threads_ = 1;
    std::mutex job_mutex_, mutex_;
    std::condition_variable wake_, done_;
    const std::function<void(int, int)>* job_ = nullptr;
    int total_ = 0, pending_ = 0;
    std::atomic<int> next_{0};
    uint64_t generation_ = 0;
    static thread_local bool inside_;
};
thread_local bool Pool::inside_ = false;

// Never destroyed: its workers wait for the next job until the process ends.
Pool& pool() {
    static Pool* p = new Pool();
    return *p;
}

// f(begin, end) over [0, n) in one chunk per thread.
void parallel_range(int64_t n, const std::function<void(int64_t, int64_t)>& f) {
    int parts = static_cast<int>(std::min<int64_t>(pool().get_num_threads(), std::max<int64_t>(n / 65536, 1)));
    pool().parallel_for(parts, [&](int i, int count) { f(n * i / count, n * (i + 1) / count); });
}

void convert(const float* src, uint16_t* dst, int64_t n) {
    parallel_range(n, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) dst[i] = to_bf16(src[i]);
    });
}

inline float from_bf16(uint16_t h) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// The emulation's operands: fp32 values that are exactly bf16 values.
void round_in_f32(const void* src, bool src_bf16, float* dst, int64_t n) {
    parallel_range(n, [&](int64_t begin, int64_t end) {
        if (src_bf16) {
            const uint16_t* h = static_cast<const uint16_t*>(src);
            for (int64_t i = begin; i < end; ++i) dst[i] = from_bf16(h[i]);
        } else {
            const float* f = static_cast<const float*>(src);
            for (int64_t i = begin; i < end; ++i) dst[i] = from_bf16(to_bf16(f[i]));
        }
    });
}

dnnl::engine& cpu_engine() {
    static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    return engine;
}

using make_stream_fn = dnnl_status_t (*)(dnnl_stream_t*, dnnl_engine_t, void*);

// The threadpool-stream constructor of the oneDNN this process actually loaded, looked up at run time: the wheel's
// OpenMP build, which the kernel links against, does not export it.
make_stream_fn threadpool_stream_create() {
    static make_stream_fn fn = [] {
        if (dnnl_version()->cpu_runtime != DNNL_RUNTIME_THREADPOOL) return make_stream_fn(nullptr);
        void* lib = dlopen("libdnnl.so.3", RTLD_LAZY | RTLD_NOLOAD);
        return lib ? reinterpret_cast<make_stream_fn>(dlsym(lib, "dnnl_threadpool_interop_stream_create")) : nullptr;
    }();
    return fn;
}

dnnl::stream stream() {
    if (make_stream_fn create = threadpool_stream_create()) {
        dnnl_stream_t handle;
        if (create(&handle, cpu_engine().get(), &pool()) == dnnl_success) return dnnl::stream(handle);
    }
    return dnnl::stream(cpu_engine());
}

// Dims and strides of a [batch..., rows, cols] operand stored row-major as [batch..., cols, rows] when transposed.
memory::desc operand(const std::vector<int64_t>& batch, int64_t rows, int64_t cols, bool transposed,
                     memory::data_type type) {
    memory::dims dims(batch.begin(), batch.end()), strides(batch.size() + 2);
    dims.push_back(rows);
    dims.push_back(cols);
    int64_t rs = transposed ? 1 : cols, cs = transposed ? rows : 1, step = rows * cols;
    strides[batch.size()] = rs;
    strides[batch.size() + 1] = cs;
    for (int i = static_cast<int>(batch.size()) - 1; i >= 0; --i) {
        strides[i] = step;
        step *= batch[i];
    }
    return memory::desc(dims, type, strides);
}

struct Plan {
    dnnl::matmul prim;
    memory::desc a, b, c;
    std::string impl;
    bool emulated = false;
};

// Creating a primitive descriptor costs far more than a small GEMM; the ViT calls a handful of shapes repeatedly.
std::mutex plans_mutex;
std::unordered_map<std::string, Plan> plans;

const Plan& plan_for(const std::vector<int64_t>& batch_a, const std::vector<int64_t>& batch_b, int64_t m,
                     int64_t k, int64_t n, bool ta, bool tb) {
    std::string key = std::to_string(ta) + std::to_string(tb);
    for (auto d : batch_a) key += "a" + std::to_string(d);
    for (auto d : batch_b) key += "b" + std::to_string(d);
    key += "m" + std::to_string(m) + "k" + std::to_string(k) + "n" + std::to_string(n);
    std::lock_guard<std::mutex> lock(plans_mutex);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    Plan p;
    p.c = operand(batch_a, m, n, false, memory::data_type::f32);
    dnnl::matmul::primitive_desc pd;
    try {
        auto bf16 = memory::data_type::bf16;
        p.a = operand(batch_a, m, k, ta, bf16);
        p.b = operand(batch_b, k, n, tb, bf16);
        pd = dnnl::matmul::primitive_desc(cpu_engine(), p.a, p.b, p.c);
    } catch (const dnnl::error& e) {
        if (e.status != dnnl_unimplemented) throw;
        auto f32 = memory::data_type::f32;
        p.a = operand(batch_a, m, k, ta, f32);
        p.b = operand(batch_b, k, n, tb, f32);
        pd = dnnl::matmul::primitive_desc(cpu_engine(), p.a, p.b, p.c);
        p.emulated = true;
    }
    p.prim = dnnl::matmul(pd);
    p.impl = std::string(pd.impl_info_str()) + (p.emulated ? " (bf16-rounded fp32 operands)" : "");
    return plans.emplace(key, std::move(p)).first->second;
}

// Operands arrive as float32 (rounded here, into per-thread buffers reused across calls) or already as bfloat16.
const void* operand_data(void* data, const char* dtype, int64_t count, bool emulated, std::vector<uint32_t>& buffer) {
    bool is_bf16 = std::strcmp(dtype, "bfloat16") == 0;
    if (is_bf16 && !emulated) return data;
    if (static_cast<int64_t>(buffer.size()) < count) buffer.resize(count);
    if (emulated)
        round_in_f32(data, is_bf16, reinterpret_cast<float*>(buffer.data()), count);
    else
        convert(static_cast<const float*>(data), reinterpret_cast<uint16_t*>(buffer.data()), count);
    return buffer.data();
}

int64_t product(const int64_t* shape, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; ++i) p *= shape[i];
    return p;
}

int run(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, bool ta, bool tb) {
    if (nparam != 3) return 1;
    int na = ndims[0], nb = ndims[1];
    if (na < 2 || na > 4 || nb < 2 || nb > 4 || (nb != 2 && nb != na)) {
        std::fprintf(stderr, "ms_vit bf16 matmul: operands of rank %d and %d are not supported\n", na, nb);
        return 2;
    }
    const int64_t *sa = shapes[0], *sb = shapes[1];
    int64_t m = ta ? sa[na - 1] : sa[na - 2], k = ta ? sa[na - 2] : sa[na - 1];
    int64_t kb = tb ? sb[nb - 1] : sb[nb - 2], n = tb ? sb[nb - 2] : sb[nb - 1];
    if (k != kb) {
        std::fprintf(stderr, "ms_vit bf16 matmul: inner dimensions differ (%lld and %lld)\n",
                     static_cast<long long>(k), static_cast<long long>(kb));
        return 3;
    }
    std::vector<int64_t> batch_a(sa, sa + na - 2), batch_b(na - 2, 1);
    if (nb == na) batch_b.assign(sb, sb + nb - 2);
    try {
        const Plan& p = plan_for(batch_a, batch_b, m, k, n, ta, tb);
        thread_local std::vector<uint32_t> buf_a, buf_b;  // 32-bit elements: room for either form
        const void* a = operand_data(params[0], dtypes[0], product(sa, 0, na), p.emulated, buf_a);
        const void* b = operand_data(params[1], dtypes[1], product(sb, 0, nb), p.emulated, buf_b);
        memory ma(p.a, cpu_engine(), const_cast<void*>(a));
        memory mb(p.b, cpu_engine(), const_cast<void*>(b));
        memory mc(p.c, cpu_engine(), params[2]);
        dnnl::stream s = stream();
        p.prim.execute(s, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
        s.wait();
    } catch (const dnnl::error& e) {
        std::fprintf(stderr, "ms_vit bf16 matmul: oneDNN failed: %s (status %d)\n", e.what(),
                     static_cast<int>(e.status));
        return 4;
    }
    return 0;
}

}  // namespace

#define MS_VIT_ENTRY(name, ta, tb)                                                                            \
    extern "C" int name(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, \
                        void*) {                                                                              \
        return run(nparam, params, ndims, shapes, dtypes, ta, tb);                                            \
    }

MS_VIT_ENTRY(ms_vit_bf16_matmul_nn, false, false)
MS_VIT_ENTRY(ms_vit_bf16_matmul_nt, false, true)
MS_VIT_ENTRY(ms_vit_bf16_matmul_tn, true, false)
MS_VIT_ENTRY(ms_vit_bf16_matmul_tt, true, true)

// The implementation oneDNN picks for a bf16 matmul of this size (e.g. "brg:avx512_core_bf16", or "ref:any" on a
// CPU without bf16 instructions), so the gate and the benchmark can report it; 0 when none is available.
extern "C" int ms_vit_bf16_impl(int64_t m, int64_t k, int64_t n, char* out, int size) {
    try {
        const dnnl_version_t* v = dnnl_version();
        const char* runtime = v->cpu_runtime == DNNL_RUNTIME_THREADPOOL ? "threadpool"
                              : v->cpu_runtime == DNNL_RUNTIME_OMP      ? "OpenMP"
                                                                        : "other";
        std::snprintf(out, size, "%s; oneDNN %d.%d.%d, %s runtime", plan_for({}, {}, m, k, n, false, false).impl.c_str(),
                      v->major, v->minor, v->patch, runtime);
        return 1;
    } catch (const dnnl::error&) {
        return 0;
    }
}
