// Portability macros shared by the C++ (CPU) and CUDA kernels.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FASTGEN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTGEN_HOST_DEVICE inline
#endif
