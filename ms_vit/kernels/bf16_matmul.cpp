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
#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
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

// VCVTNEPS2BF16, 16 values per instruction, on the CPUs whose bf16 matmul this kernel is for: round to nearest
// even as to_bf16, except that it flushes fp32 subnormals (below 1.2e-38) to zero, as oneDNN's own conversion does.
__attribute__((target("avx512f,avx512bf16"))) void convert_avx512bf16(const float* src, uint16_t* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    for (; i < n; ++i) dst[i] = to_bf16(src[i]);
}

void convert(const float* src, uint16_t* dst, int64_t n) {
    static const bool native = __builtin_cpu_supports("avx512bf16");
    parallel_range(n, [&](int64_t begin, int64_t end) {
        if (native) {
            convert_avx512bf16(src + begin, dst + begin, end - begin);
            return;
        }
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
    memory::desc a, b, c, bias;
    std::string impl;
    bool emulated = false;
};

// Creating a primitive descriptor costs far more than a small GEMM; the ViT calls a handful of shapes repeatedly.
std::mutex plans_mutex;
std::unordered_map<std::string, Plan> plans;

// What the matmul adds to its product in the same pass: nothing, a bias row, or the bias and then a GELU.
enum Epilogue { kNone = 0, kBias = 1, kBiasGeluTanh = 2, kBiasGeluErf = 3 };

const Plan& plan_for(const std::vector<int64_t>& batch_a, const std::vector<int64_t>& batch_b, int64_t m,
                     int64_t k, int64_t n, bool ta, bool tb, Epilogue epilogue = kNone) {
    std::string key = std::to_string(ta) + std::to_string(tb) + "e" + std::to_string(epilogue);
    for (auto d : batch_a) key += "a" + std::to_string(d);
    for (auto d : batch_b) key += "b" + std::to_string(d);
    key += "m" + std::to_string(m) + "k" + std::to_string(k) + "n" + std::to_string(n);
    std::lock_guard<std::mutex> lock(plans_mutex);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    Plan p;
    p.c = operand(batch_a, m, n, false, memory::data_type::f32);
    if (epilogue != kNone) p.bias = operand(std::vector<int64_t>(batch_a.size(), 1), 1, n, false, memory::data_type::f32);
    dnnl::primitive_attr attr;
    if (epilogue == kBiasGeluTanh || epilogue == kBiasGeluErf) {
        dnnl::post_ops ops;
        ops.append_eltwise(epilogue == kBiasGeluTanh ? dnnl::algorithm::eltwise_gelu_tanh
                                                     : dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
        attr.set_post_ops(ops);
    }
    auto describe = [&](memory::data_type type) {
        p.a = operand(batch_a, m, k, ta, type);
        p.b = operand(batch_b, k, n, tb, type);
        return epilogue == kNone ? dnnl::matmul::primitive_desc(cpu_engine(), p.a, p.b, p.c, attr)
                                 : dnnl::matmul::primitive_desc(cpu_engine(), p.a, p.b, p.bias, p.c, attr);
    };
    dnnl::matmul::primitive_desc pd;
    try {
        pd = describe(memory::data_type::bf16);
    } catch (const dnnl::error& e) {
        if (e.status != dnnl_unimplemented) throw;
        pd = describe(memory::data_type::f32);
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

// params: A, B, C for a matmul; A, B, bias, C for a dense layer (its epilogue given).
int run(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, bool ta, bool tb,
        Epilogue epilogue = kNone) {
    if (nparam != (epilogue == kNone ? 3 : 4)) return 1;
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
    if (nb == na) {
        batch_b.assign(sb, sb + nb - 2);
    } else if (!ta) {  // one weight for all rows: a single GEMM over the flattened rows
        m = product(sa, 0, na - 1);
        batch_a.clear();
        batch_b.clear();
    }
    try {
        const Plan& p = plan_for(batch_a, batch_b, m, k, n, ta, tb, epilogue);
        thread_local std::vector<uint32_t> buf_a, buf_b;  // 32-bit elements: room for either form
        const void* a = operand_data(params[0], dtypes[0], product(sa, 0, na), p.emulated, buf_a);
        const void* b = operand_data(params[1], dtypes[1], product(sb, 0, nb), p.emulated, buf_b);
        memory ma(p.a, cpu_engine(), const_cast<void*>(a));
        memory mb(p.b, cpu_engine(), const_cast<void*>(b));
        memory mc(p.c, cpu_engine(), params[nparam - 1]);
        std::unordered_map<int, memory> args{{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
        if (epilogue != kNone) {
            if (std::strcmp(dtypes[2], "float32") != 0) {
                std::fprintf(stderr, "ms_vit bf16 dense: the bias must be float32, not %s\n", dtypes[2]);
                return 5;
            }
            args.emplace(DNNL_ARG_BIAS, memory(p.bias, cpu_engine(), params[2]));
        }
        dnnl::stream s = stream();
        p.prim.execute(s, args);
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

// Dense layers (x [..., K], W [N, K], b [N]) -> x W^T + b, then the GELU where named; the GELUs are for inference
// (their gradient would need the pre-activation this pass does not keep).
#define MS_VIT_DENSE(name, epilogue)                                                                          \
    extern "C" int name(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, \
                        void*) {                                                                              \
        return run(nparam, params, ndims, shapes, dtypes, false, true, epilogue);                             \
    }

MS_VIT_DENSE(ms_vit_bf16_dense, kBias)
MS_VIT_DENSE(ms_vit_bf16_dense_gelu_tanh, kBiasGeluTanh)
MS_VIT_DENSE(ms_vit_bf16_dense_gelu_erf, kBiasGeluErf)

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

// ---- Self-attention in one call: qkv [B, N, 3C] (C = H heads x D) -> context [B, N, C] and the attention
// probabilities [B, H, N, N], and its gradient. q, k and v are read in place from qkv through strides, and the
// context is written in place through strides: none of the head split/merge transposes, no unstack, no scaled
// copy of q. The three GEMM kinds run on bf16 operands with fp32 accumulation like the rest of the kernel; the
// softmax (oneDNN's, fp32) and the probabilities kept for the backward stay fp32. ----
namespace {

// A [B, H, rows, cols] view of a row-major buffer: element (b, h, r, c) at b*sb + h*sh + r*sr + c*sc.
memory::desc view(int64_t b, int64_t h, int64_t rows, int64_t cols, int64_t sb, int64_t sh, int64_t sr, int64_t sc,
                  memory::data_type type) {
    return memory::desc({b, h, rows, cols}, type, {sb, sh, sr, sc});
}

struct AttnPlan {
    std::vector<dnnl::matmul> mm;
    std::vector<memory::desc> a, b, c;
    dnnl::softmax_forward softmax;
    dnnl::softmax_backward softmax_grad;
    memory::desc probs;
    bool emulated = false;
};

using MatmulDescs = std::function<void(memory::data_type, memory::desc&, memory::desc&, memory::desc&)>;

// One matmul of a plan: bf16 operands, or bf16-rounded fp32 ones where oneDNN has no bf16 matmul (then for all).
void add_matmul(AttnPlan& p, const MatmulDescs& descs, float scale) {
    dnnl::primitive_attr attr;
    if (scale != 1.f) {
        dnnl::post_ops ops;
        ops.append_eltwise(dnnl::algorithm::eltwise_linear, scale, 0.f);
        attr.set_post_ops(ops);
    }
    memory::desc a, b, c;
    dnnl::matmul::primitive_desc pd;
    if (!p.emulated) {
        try {
            descs(memory::data_type::bf16, a, b, c);
            pd = dnnl::matmul::primitive_desc(cpu_engine(), a, b, c, attr);
        } catch (const dnnl::error& e) {
            if (e.status != dnnl_unimplemented) throw;
            p.emulated = true;
        }
    }
    if (p.emulated) {
        descs(memory::data_type::f32, a, b, c);
        pd = dnnl::matmul::primitive_desc(cpu_engine(), a, b, c, attr);
    }
    p.mm.emplace_back(pd);
    p.a.push_back(a);
    p.b.push_back(b);
    p.c.push_back(c);
}

std::mutex attn_mutex;
std::unordered_map<std::string, AttnPlan> attn_plans;

// Matmuls 0-1: forward (scores = scale q k^T, context = P v); 2-5: backward (dP = dctx v^T, dq = scale dS k,
// dk = scale dS^T q, dv = P^T dctx). Operand dtypes: bf16 (or fp32 emulation); outputs fp32.
const AttnPlan& attn_plan(int64_t B, int64_t N, int64_t H, int64_t D, bool backward) {
    std::string key = std::to_string(B) + "," + std::to_string(N) + "," + std::to_string(H) + "," +
                      std::to_string(D) + (backward ? "b" : "f");
    std::lock_guard<std::mutex> lock(attn_mutex);
    auto it = attn_plans.find(key);
    if (it != attn_plans.end()) return it->second;
    AttnPlan p;
    const int64_t C = H * D, row3 = 3 * C, sq = N * row3;  // qkv: [B, N, 3, H, D]
    const int64_t sp = N * N, sph = H * N * N;             // probabilities: [B, H, N, N]
    const float scale = 1.f / std::sqrt(static_cast<float>(D));
    auto f32 = memory::data_type::f32;
    // q (or k, v) as [B, H, N, D]; k^T as [B, H, D, N]; context / dctx as [B, H, N, D] in [B, N, H, D] memory.
    auto qkv_part = [&](memory::data_type t) { return view(B, H, N, D, sq, D, row3, 1, t); };
    auto qkv_part_t = [&](memory::data_type t) { return view(B, H, D, N, sq, D, 1, row3, t); };
    auto ctx_part = [&](memory::data_type t) { return view(B, H, N, D, N * C, D, C, 1, t); };
    auto probs = [&](memory::data_type t) { return view(B, H, N, N, sph, sp, N, 1, t); };
    auto probs_t = [&](memory::data_type t) { return view(B, H, N, N, sph, sp, 1, N, t); };
    add_matmul(p, [&](auto t, auto& a, auto& b, auto& c) { a = qkv_part(t); b = qkv_part_t(t); c = probs(f32); }, scale);
    add_matmul(p, [&](auto t, auto& a, auto& b, auto& c) { a = probs(t); b = qkv_part(t); c = ctx_part(f32); }, 1.f);
    p.probs = probs(f32);
    auto fwd_kind = backward ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    dnnl::softmax_forward::primitive_desc sfwd(cpu_engine(), fwd_kind, dnnl::algorithm::softmax_accurate, p.probs,
                                               p.probs, 3);
    p.softmax = dnnl::softmax_forward(sfwd);
    if (backward) {
        add_matmul(p, [&](auto t, auto& a, auto& b, auto& c) { a = ctx_part(t); b = qkv_part_t(t); c = probs(f32); }, 1.f);
        add_matmul(p, [&](auto t, auto& a, auto& b, auto& c) { a = probs(t); b = qkv_part(t); c = qkv_part(f32); }, scale);
        add_matmul(p, [&](auto t, auto& a, auto& b, auto& c) { a = probs_t(t); b = qkv_part(t); c = qkv_part(f32); }, scale);
        add_matmul(p, [&](auto t, auto& a, auto& b, auto& c) { a = probs_t(t); b = ctx_part(t); c = qkv_part(f32); }, 1.f);
        dnnl::softmax_backward::primitive_desc sbwd(cpu_engine(), dnnl::algorithm::softmax_accurate, p.probs, p.probs,
                                                    p.probs, 3, sfwd);
        p.softmax_grad = dnnl::softmax_backward(sbwd);
    }
    return attn_plans.emplace(key, std::move(p)).first->second;
}

// The bf16 form (or bf16-rounded fp32 form) of an fp32 buffer, in a per-thread scratch buffer.
void* lowered(const float* src, int64_t count, bool emulated, std::vector<uint32_t>& buffer) {
    return const_cast<void*>(operand_data(const_cast<float*>(src), "float32", count, emulated, buffer));
}

void matmul(const AttnPlan& p, int i, dnnl::stream& s, const void* a, const void* b, void* c) {
    memory ma(p.a[i], cpu_engine(), const_cast<void*>(a)), mb(p.b[i], cpu_engine(), const_cast<void*>(b));
    memory mc(p.c[i], cpu_engine(), c);
    p.mm[i].execute(s, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
}

bool attn_dims(int64_t* qkv_shape, int64_t* probs_shape, int64_t& B, int64_t& N, int64_t& H, int64_t& D) {
    B = qkv_shape[0];
    N = qkv_shape[1];
    H = probs_shape[1];
    if (H <= 0 || qkv_shape[2] % (3 * H) != 0 || probs_shape[0] != B || probs_shape[2] != N || probs_shape[3] != N) {
        std::fprintf(stderr, "ms_vit bf16 attention: qkv [B, N, 3 H D] and probabilities [B, H, N, N] disagree\n");
        return false;
    }
    D = qkv_shape[2] / (3 * H);
    return true;
}

}  // namespace

// params: qkv [B, N, 3C] -> context [B, N, C], probabilities [B, H, N, N] (all float32).
extern "C" int ms_vit_bf16_attention(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                     void*, void*) {
    if (nparam != 3 || ndims[0] != 3 || ndims[2] != 4 || std::strcmp(dtypes[0], "float32") != 0) return 1;
    int64_t B, N, H, D;
    if (!attn_dims(shapes[0], shapes[2], B, N, H, D)) return 2;
    try {
        const AttnPlan& p = attn_plan(B, N, H, D, false);
        const int64_t C = H * D;
        thread_local std::vector<uint32_t> buf_qkv, buf_p;
        const float* qkv = static_cast<const float*>(params[0]);
        float* probs = static_cast<float*>(params[2]);
        auto* low = static_cast<char*>(lowered(qkv, B * N * 3 * C, p.emulated, buf_qkv));
        const int64_t el = p.emulated ? 4 : 2, part = C * el;  // bytes per element; offset of k (and v) in a row
        dnnl::stream s = stream();
        matmul(p, 0, s, low, low + part, probs);
        memory mp(p.probs, cpu_engine(), probs);
        p.softmax.execute(s, {{DNNL_ARG_SRC, mp}, {DNNL_ARG_DST, mp}});
        matmul(p, 1, s, lowered(probs, B * H * N * N, p.emulated, buf_p), low + 2 * part, params[1]);
        s.wait();
    } catch (const dnnl::error& e) {
        std::fprintf(stderr, "ms_vit bf16 attention: oneDNN failed: %s (status %d)\n", e.what(), static_cast<int>(e.status));
        return 4;
    }
    return 0;
}

// params: qkv [B, N, 3C], probabilities [B, H, N, N], dcontext [B, N, C], dprobabilities [B, H, N, N] -> dqkv.
extern "C" int ms_vit_bf16_attention_grad(int nparam, void** params, int* ndims, int64_t** shapes,
                                          const char** dtypes, void*, void*) {
    if (nparam != 5 || ndims[0] != 3 || ndims[1] != 4) return 1;
    for (int i = 0; i < 4; ++i)
        if (std::strcmp(dtypes[i], "float32") != 0) return 1;
    int64_t B, N, H, D;
    if (!attn_dims(shapes[0], shapes[1], B, N, H, D)) return 2;
    try {
        const AttnPlan& p = attn_plan(B, N, H, D, true);
        const int64_t C = H * D, probs_count = B * H * N * N;
        thread_local std::vector<uint32_t> buf_qkv, buf_p, buf_dctx, buf_ds;
        thread_local std::vector<float> dp;
        const float* probs = static_cast<const float*>(params[1]);
        const float* dprobs = static_cast<const float*>(params[3]);
        auto* dqkv = static_cast<char*>(params[4]);
        auto* low = static_cast<char*>(lowered(static_cast<const float*>(params[0]), B * N * 3 * C, p.emulated, buf_qkv));
        void* low_dctx = lowered(static_cast<const float*>(params[2]), B * N * C, p.emulated, buf_dctx);
        const int64_t el = p.emulated ? 4 : 2, part = C * el, part32 = C * 4;
        if (static_cast<int64_t>(dp.size()) < probs_count) dp.resize(probs_count);
        dnnl::stream s = stream();
        matmul(p, 2, s, low_dctx, low + 2 * part, dp.data());  // dP = dctx v^T
        s.wait();
        // The probabilities are an output too (attention maps): their own gradient adds to dP. (A pointer, not
        // dp itself: inside the pool's threads the name dp is their own thread_local vector.)
        float* dp_data = dp.data();
        parallel_range(probs_count, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) dp_data[i] += dprobs[i];
        });
        memory mp(p.probs, cpu_engine(), const_cast<float*>(probs)), mdp(p.probs, cpu_engine(), dp.data());
        p.softmax_grad.execute(s, {{DNNL_ARG_DST, mp}, {DNNL_ARG_DIFF_DST, mdp}, {DNNL_ARG_DIFF_SRC, mdp}});
        void* low_ds = lowered(dp.data(), probs_count, p.emulated, buf_ds);
        void* low_p = lowered(probs, probs_count, p.emulated, buf_p);
        matmul(p, 3, s, low_ds, low + part, dqkv);                 // dq = scale dS k
        matmul(p, 4, s, low_ds, low, dqkv + part32);               // dk = scale dS^T q
        matmul(p, 5, s, low_p, low_dctx, dqkv + 2 * part32);       // dv = P^T dctx
        s.wait();
    } catch (const dnnl::error& e) {
        std::fprintf(stderr, "ms_vit bf16 attention grad: oneDNN failed: %s (status %d)\n", e.what(),
                     static_cast<int>(e.status));
        return 4;
    }
    return 0;
}

// The bias gradient of a dense layer: dy [..., N] -> the sum of its rows [N], fp32. Each thread sums a block of
// rows into its own partial row, then the partials are added in a fixed order: the same result on every run.
extern "C" int ms_vit_bias_grad(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                                void*) {
    if (nparam != 2 || ndims[0] < 1 || ndims[1] != 1 || std::strcmp(dtypes[0], "float32") != 0) return 1;
    const int64_t n = shapes[0][ndims[0] - 1], rows = product(shapes[0], 0, ndims[0] - 1);
    if (shapes[1][0] != n) return 2;
    const float* dy = static_cast<const float*>(params[0]);
    float* out = static_cast<float*>(params[1]);
    const int parts = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(pool().get_num_threads(), rows / 16)));
    std::vector<float> partial(static_cast<size_t>(parts) * n, 0.f);
    pool().parallel_for(parts, [&](int i, int count) {
        float* acc = partial.data() + static_cast<size_t>(i) * n;
        for (int64_t r = rows * i / count, end = rows * (i + 1) / count; r < end; ++r) {
            const float* row = dy + r * n;
            for (int64_t j = 0; j < n; ++j) acc[j] += row[j];
        }
    });
    for (int64_t j = 0; j < n; ++j) out[j] = partial[j];
    for (int i = 1; i < parts; ++i)
        for (int64_t j = 0; j < n; ++j) out[j] += partial[static_cast<size_t>(i) * n + j];
    return 0;
}
