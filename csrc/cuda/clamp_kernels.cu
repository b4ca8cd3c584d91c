// CUDA kernel of clamp_: every tensor of a list clamped in place by one
// launch (a multi-tensor apply). The tensors' pointers and sizes and the
// running count of their chunks travel in the kernel's argument struct; the
// grid is as many blocks as the device keeps resident, each taking chunks
// grid-stride and finding a chunk's tensor by binary search. So one launch
// covers any sizes; only a list longer than one struct holds (1360 tensors,
// 160 with a toolkit before CUDA 12.1) takes more launches.
#include <vector>

#include "kernel_utils.cuh"

namespace fastgen::cuda {
namespace {

// Tensors per launch: 24 bytes each of kernel parameters. Every architecture
// takes 4 KB of parameters; Volta and later take 32,764 bytes when built and
// run with CUDA 12.1 or later (torch's CUDA builds need a newer driver anyway).
constexpr int kSmallList = 160;
#if defined(CUDART_VERSION) && CUDART_VERSION >= 12010
constexpr int kLargeList = 1360;
#else
constexpr int kLargeList = kSmallList;
#endif

// Elements of a chunk: a multiple of a block's widest vector pass (256
// threads x 8 halves), sized per launch so that the resident blocks get
// about four chunks each (balance across uneven tensors), within these bounds.
constexpr int64_t kChunkQuantum = static_cast<int64_t>(kThreads) * 8;
constexpr int64_t kMinChunk = kChunkQuantum;
constexpr int64_t kMaxChunk = 65536;
constexpr int64_t kChunksPerBlock = 4;

template <typename T, int CAPACITY>
struct ClampArgs {
  T* data[CAPACITY];
  int64_t numel[CAPACITY];
  int64_t first_chunk[CAPACITY];  // chunks of the tensors before this one
  int64_t chunks;                 // chunks of all `count` tensors
  int64_t chunk;                  // elements per chunk, a multiple of kChunkQuantum
  int count;
};
static_assert(sizeof(ClampArgs<double, kSmallList>) + 2 * sizeof(double) <= 4096, "clamp arguments exceed 4 KB");
static_assert(sizeof(ClampArgs<double, kLargeList>) + 2 * sizeof(double) <= 32764,
              "clamp arguments exceed 32,764 bytes");

// NaN stays NaN, as with torch.clamp: both comparisons are false for it.
template <typename Acc>
__device__ __forceinline__ Acc clamp_value(Acc x, Acc low, Acc high) {
  return x < low ? low : (x > high ? high : x);
}

// __grid_constant__: the struct is read in place from parameter memory (a
// by-value struct indexed at run time would otherwise be copied per thread).
template <typename T, int CAPACITY>
__global__ void __launch_bounds__(kThreads)
    clamp_kernel(const __grid_constant__ ClampArgs<T, CAPACITY> args, double min, double max) {
  using Acc = acc_t<T>;
  constexpr int N = kVec<T>;
  // The bounds as T, like the CPU kernel's: a value is clamped to a representable bound.
  const Acc low = to_acc(from_acc<T>(static_cast<Acc>(min)));
  const Acc high = to_acc(from_acc<T>(static_cast<Acc>(max)));
  int t = 0;
  for (int64_t c = blockIdx.x; c < args.chunks; c += gridDim.x) {
    // The last tensor whose first chunk is at most c (first_chunk increases;
    // chunks only grow, so the search starts at the previous answer).
    int high_t = args.count - 1;
    while (t < high_t) {
      const int middle = (t + high_t + 1) / 2;
      if (args.first_chunk[middle] <= c) {
        t = middle;
      } else {
        high_t = middle - 1;
      }
    }
    T* data = args.data[t];
    const int64_t begin = (c - args.first_chunk[t]) * args.chunk;
    const int64_t end = begin + args.chunk < args.numel[t] ? begin + args.chunk : args.numel[t];
    // Chunks start at multiples of kChunkQuantum, so an aligned tensor has aligned chunks.
    int64_t scalar_begin = begin;
    if (reinterpret_cast<uintptr_t>(data) % 16 == 0) {
      scalar_begin = end - (end - begin) % N;
      for (int64_t i = begin + static_cast<int64_t>(threadIdx.x) * N; i < scalar_begin;
           i += static_cast<int64_t>(kThreads) * N) {
        Acc values[N];
        load<N, true>(data + i, N, values);
#pragma unroll
        for (int v = 0; v < N; ++v) values[v] = clamp_value(values[v], low, high);
        store<N, true>(data + i, N, values);
      }
    }
    for (int64_t i = scalar_begin + threadIdx.x; i < end; i += kThreads) {
      data[i] = from_acc<T>(clamp_value(to_acc(data[i]), low, high));
    }
  }
}

// One launch over tensors [begin, end) of the list (none empty, at most CAPACITY).
template <typename T, int CAPACITY>
cudaError_t clamp_launch(const Launch& launch, void* const* tensors, const int64_t* numels, const int64_t* nonempty,
                         int64_t begin, int64_t end, double min, double max) {
  constexpr auto kernel = clamp_kernel<T, CAPACITY>;
  ClampArgs<T, CAPACITY> args;
  int64_t elements = 0;
  for (int64_t i = begin; i < end; ++i) elements += numels[nonempty[i]];
  const int64_t resident = static_cast<int64_t>(grid_for<kernel>(launch, INT64_MAX));
  int64_t chunk = ceil_div(ceil_div(elements, resident * kChunksPerBlock), kChunkQuantum) * kChunkQuantum;
  chunk = chunk < kMinChunk ? kMinChunk : (chunk > kMaxChunk ? kMaxChunk : chunk);
  int64_t chunks = 0;
  args.count = static_cast<int>(end - begin);
  for (int64_t i = begin; i < end; ++i) {
    const int j = static_cast<int>(i - begin);
    args.data[j] = static_cast<T*>(tensors[nonempty[i]]);
    args.numel[j] = numels[nonempty[i]];
    args.first_chunk[j] = chunks;
    chunks += ceil_div(args.numel[j], chunk);
  }
  args.chunks = chunks;
  args.chunk = chunk;
  const int64_t grid = chunks < resident ? chunks : resident;
  kernel<<<static_cast<unsigned>(grid), kThreads, 0, launch.stream>>>(args, min, max);
  return cudaGetLastError();
}

template <typename T>
cudaError_t clamp_typed(const Launch& launch, void* const* tensors, const int64_t* numels, int64_t count,
                        double min, double max) {
  // The non-empty tensors' indices, in order.
  std::vector<int64_t> indices;
  indices.reserve(static_cast<size_t>(count));
  for (int64_t t = 0; t < count; ++t) {
    if (numels[t] > 0) indices.push_back(t);
  }
  const int64_t* nonempty = indices.data();
  const int64_t n = static_cast<int64_t>(indices.size());
  cudaError_t error = cudaSuccess;
  for (int64_t begin = 0; begin < n && error == cudaSuccess;) {
    const int64_t left = n - begin;
    if (left <= kSmallList) {
      error = clamp_launch<T, kSmallList>(launch, tensors, numels, nonempty, begin, n, min, max);
      begin = n;
    } else {
      const int64_t end = left < kLargeList ? n : begin + kLargeList;
      error = clamp_launch<T, kLargeList>(launch, tensors, numels, nonempty, begin, end, min, max);
      begin = end;
    }
  }
  return error;
}

}  // namespace

cudaError_t clamp(const Launch& launch, Dtype dtype, void* const* tensors, const int64_t* numels, int64_t count,
                  double min, double max) {
  return dispatch(dtype, [&](auto tag) { return clamp_typed<decltype(tag)>(launch, tensors, numels, count, min, max); });
}

}  // namespace fastgen::cuda
