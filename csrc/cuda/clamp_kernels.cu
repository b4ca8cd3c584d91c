// CUDA kernel of clamp_: every tensor of a list clamped in place by one
// launch (a multi-tensor apply). The tensors' pointers and sizes and a map
// from block to (tensor, chunk) travel in the kernel's argument struct; a
// list that does not fit one struct takes as many launches as it fills.
#include "kernel_utils.cuh"

namespace fastgen::cuda {
namespace {

constexpr int kMaxTensors = 110;
constexpr int kMaxBlocks = 320;
constexpr int64_t kChunk = 65536;  // elements per block

template <typename T>
struct ClampArgs {
  T* data[kMaxTensors];
  int64_t numel[kMaxTensors];
  unsigned char block_tensor[kMaxBlocks];
  int32_t block_chunk[kMaxBlocks];
};
// Kernel parameters are limited to 4 KB on every architecture we build for;
// the bounds follow the struct.
static_assert(sizeof(ClampArgs<double>) + 2 * sizeof(double) <= 4096, "clamp arguments exceed 4 KB");
static_assert(kMaxTensors <= 256, "block_tensor is a byte");

// NaN stays NaN, as with torch.clamp: both comparisons are false for it.
template <typename Acc>
__device__ __forceinline__ Acc clamp_value(Acc x, Acc low, Acc high) {
  return x < low ? low : (x > high ? high : x);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) clamp_kernel(ClampArgs<T> args, double min, double max) {
  using Acc = acc_t<T>;
  constexpr int N = kVec<T>;
  // The bounds as T, like the CPU kernel's: a value is clamped to a representable bound.
  const Acc low = to_acc(from_acc<T>(static_cast<Acc>(min)));
  const Acc high = to_acc(from_acc<T>(static_cast<Acc>(max)));
  const int t = args.block_tensor[blockIdx.x];
  T* data = args.data[t];
  const int64_t begin = static_cast<int64_t>(args.block_chunk[blockIdx.x]) * kChunk;
  const int64_t end = begin + kChunk < args.numel[t] ? begin + kChunk : args.numel[t];
  // Chunks start at multiples of kChunk, so an aligned tensor has aligned chunks.
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

template <typename T>
cudaError_t clamp_typed(const Launch& launch, void* const* tensors, const int64_t* numels, int64_t count,
                        double min, double max) {
  ClampArgs<T> args;
  int tensors_held = 0;
  int blocks = 0;
  for (int64_t t = 0; t < count; ++t) {
    if (numels[t] == 0) continue;
    args.data[tensors_held] = static_cast<T*>(tensors[t]);
    args.numel[tensors_held] = numels[t];
    ++tensors_held;
    const int64_t chunks = ceil_div(numels[t], kChunk);
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      args.block_tensor[blocks] = static_cast<unsigned char>(tensors_held - 1);
      args.block_chunk[blocks] = static_cast<int32_t>(chunk);
      ++blocks;
      const bool last_chunk = chunk == chunks - 1;
      if (blocks < kMaxBlocks && !(last_chunk && tensors_held == kMaxTensors)) continue;
      clamp_kernel<T><<<blocks, kThreads, 0, launch.stream>>>(args, min, max);
      if (const cudaError_t error = cudaGetLastError(); error != cudaSuccess) return error;
      blocks = 0;
      if (last_chunk) {
        tensors_held = 0;
      } else {
        // The rest of this tensor goes on in the next launch, as its first tensor.
        args.data[0] = args.data[tensors_held - 1];
        args.numel[0] = args.numel[tensors_held - 1];
        tensors_held = 1;
      }
    }
  }
  if (blocks > 0) {
    clamp_kernel<T><<<blocks, kThreads, 0, launch.stream>>>(args, min, max);
    return cudaGetLastError();
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t clamp(const Launch& launch, Dtype dtype, void* const* tensors, const int64_t* numels, int64_t count,
                  double min, double max) {
  return dispatch(dtype, [&](auto tag) { return clamp_typed<decltype(tag)>(launch, tensors, numels, count, min, max); });
}

}  // namespace fastgen::cuda
