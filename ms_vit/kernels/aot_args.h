// Helpers for reading MindSpore aot kernel arguments, shared by the kernels compiled without oneDNN
// (gelu_erf.cpp, layer_norm.cpp). gate.compile_library hashes every header here into the build's cache key.
#pragma once

#include <cstdint>
#include <cstring>

namespace ms_vit_aot {

// Elements of a tensor of rank ndim.
inline int64_t count(int ndim, const int64_t* shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[d];
    return n;
}

inline bool all_float32(int nparam, const char** dtypes) {
    for (int i = 0; i < nparam; ++i)
        if (std::strcmp(dtypes[i], "float32") != 0) return false;
    return true;
}

}  // namespace ms_vit_aot
