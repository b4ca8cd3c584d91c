// Building blocks shared by the CUDA kernels, torch-free: native half types
// converted to float in registers, 128-bit vector loads and stores with a
// masked scalar fallback, rows with broadcast operands, deterministic per-row
// sums (a group of lanes or a whole block per row, never atomics), grid-stride
// loops over groups of elements, and the noise stream four outputs per Philox
// call.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "fastgen/math.h"
#include "fastgen/philox.h"
#include "fastgen/philox_cuda.h"
#include "launch.h"

namespace fastgen::cuda {

constexpr int kThreads = 256;  // threads per block of every kernel
constexpr int kWarp = 32;
// A row of at most kWarp * N * kLaneIters columns is summed by a group of at
// most one warp's lanes; a longer one by whole blocks, kRowChunk columns each.
constexpr int kLaneIters = 8;

// ------------------------------------------------------------------ types

// The compute and accumulation type: float for the half types, else T.
template <typename T>
struct AccType {
  using type = T;
};
template <>
struct AccType<__half> {
  using type = float;
};
template <>
struct AccType<__nv_bfloat16> {
  using type = float;
};
template <typename T>
using acc_t = typename AccType<T>::type;

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Elements per 128-bit access, and per thread of the noise kernels (at least
// the four outputs of one Philox call).
template <typename T>
constexpr int kVec = 16 / sizeof(T);
template <typename T>
constexpr int kNoiseVec = kVec<T> < 4 ? 4 : kVec<T>;

template <typename T>
struct alignas(16) Pack16 {
  T v[kVec<T>];
};

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ------------------------------------------------------------ loads, stores

// out[i] = p[i] for i < N (ALIGNED: p is 16-byte aligned and all N are there,
// read as 128-bit loads) or for i < valid (others 0).
template <int N, bool ALIGNED, typename T>
__device__ __forceinline__ void load(const T* p, int valid, acc_t<T> (&out)[N]) {
  if constexpr (ALIGNED) {
    static_assert(N % kVec<T> == 0, "a group is whole 128-bit packs");
#pragma unroll
    for (int v = 0; v < N / kVec<T>; ++v) {
      const Pack16<T> pack = reinterpret_cast<const Pack16<T>*>(p)[v];
#pragma unroll
      for (int i = 0; i < kVec<T>; ++i) out[v * kVec<T> + i] = to_acc(pack.v[i]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = i < valid ? to_acc(p[i]) : acc_t<T>(0);
  }
}

template <int N, bool ALIGNED, typename T>
__device__ __forceinline__ void store(T* p, int valid, const acc_t<T> (&in)[N]) {
  if constexpr (ALIGNED) {
#pragma unroll
    for (int v = 0; v < N / kVec<T>; ++v) {
      Pack16<T> pack;
#pragma unroll
      for (int i = 0; i < kVec<T>; ++i) pack.v[i] = from_acc<T>(in[v * kVec<T> + i]);
      reinterpret_cast<Pack16<T>*>(p)[v] = pack;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      if (i < valid) p[i] = from_acc<T>(in[i]);
    }
  }
}

__device__ __forceinline__ int group_valid(int64_t first, int64_t end, int n) {
  return end - first < n ? static_cast<int>(end - first) : n;
}

// ------------------------------------------------------------------- rows

// a / b and a % b of non-negative indices. 64-bit division is a subroutine
// call of some 70 instructions (and the registers it saves around the call
// spill in the float64 kernels); 32-bit division is inlined and a fraction
// of that. Indices below 2^32 take it, so only tensors beyond 2^32 elements
// pay for the 64-bit path.
__device__ __forceinline__ int64_t index_div(int64_t a, int64_t b) {
  if (((a | b) >> 32) == 0) return static_cast<uint32_t>(a) / static_cast<uint32_t>(b);
  return a / b;
}
__device__ __forceinline__ int64_t index_mod(int64_t a, int64_t b) {
  if (((a | b) >> 32) == 0) return static_cast<uint32_t>(a) % static_cast<uint32_t>(b);
  return a % b;
}

// A row operand on the device (launch.h's Operand): its data repeat every
// period_rows rows, so row r starts at row r % period_rows, which equals
// element (r * cols) % period. The common periods (every row: a full operand;
// one row: a prior of shape (D,)) need no division.
template <typename T>
struct RowOperand {
  const T* data = nullptr;
  int64_t period_rows = 1;

  RowOperand() = default;
  RowOperand(Operand op, int64_t cols)
      : data(static_cast<const T*>(op.data)),
        period_rows(cols > 0 && op.period / cols > 1 ? op.period / cols : 1) {}

  __device__ __forceinline__ bool defined() const { return data != nullptr; }
  __device__ __forceinline__ const T* row(int64_t r, int64_t cols) const {
    const int64_t period_row = r < period_rows ? r : (period_rows == 1 ? 0 : index_mod(r, period_rows));
    return data + period_row * cols;
  }
};

inline bool aligned16(Operand op) { return op.data == nullptr || aligned16(op.data); }

// An operand of a row sum whose groups of N elements are 128-bit loads in
// every layout row_sums takes: 16-byte aligned, and its period whole groups,
// so that a group of a one-column array never wraps around the period.
template <int N>
inline bool aligned_groups(Operand op) {
  return op.data == nullptr || (aligned16(op.data) && op.period % N == 0);
}

// A step of `rows` rows and `cols` columns (cols below the array's columns):
// the grid stride of a kernel over a rows x cols array, divided once on the host.
struct RowStep {
  int64_t rows;
  int64_t cols;
};

inline RowStep row_step(int64_t elements, int64_t cols) {
  return cols > 0 ? RowStep{elements / cols, elements % cols} : RowStep{0, 0};
}

// The (row, column) of an element of a rows x cols array: one division where
// a thread starts, then stepped without any (next: one element; advance: a
// grid stride).
struct RowCursor {
  int64_t row;
  int64_t col;

  __device__ __forceinline__ RowCursor(int64_t element, int64_t cols) : row(index_div(element, cols)) {
    col = element - row * cols;
  }
  __device__ __forceinline__ void next(int64_t cols) {
    if (++col == cols) {
      col = 0;
      ++row;
    }
  }
  __device__ __forceinline__ void advance(RowStep step, int64_t cols) {
    row += step.rows;
    col += step.cols;
    if (col >= cols) {
      col -= cols;
      ++row;
    }
  }
};

// Elements [e, e + valid) of the rows x cols array that `op` fills, e at
// `at`: one 128-bit load when ALIGNED (the group lies in one row), else one
// element at a time. An absent operand reads as zeros.
template <int N, bool ALIGNED, typename T>
__device__ __forceinline__ void load_elements(const RowOperand<T>& op, RowCursor at, int64_t cols, int valid,
                                              acc_t<T> (&out)[N]) {
  if (!op.defined()) {
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = acc_t<T>(0);
    return;
  }
  if constexpr (ALIGNED) {
    load<N, true>(op.row(at.row, cols) + at.col, valid, out);
  } else {
    // The row's start is looked up again only where the group crosses into the next row.
    const T* row = op.row(at.row, cols);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      out[i] = i < valid ? to_acc(row[at.col]) : acc_t<T>(0);
      at.next(cols);
      if (at.col == 0 && i + 1 < valid) row = op.row(at.row, cols);
    }
  }
}

// per_row[row] of each element of the group at `at` (an upstream gradient of
// per-row sums).
template <int N, bool ALIGNED, typename Acc>
__device__ __forceinline__ void row_values(const Acc* per_row, RowCursor at, int64_t cols, int valid,
                                           Acc (&out)[N]) {
  if constexpr (ALIGNED) {
    const Acc value = per_row[at.row];
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = value;
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      out[i] = i < valid ? per_row[at.row] : Acc(0);
      at.next(cols);
    }
  }
}

// p[0, N) or zeros when p is null (an absent operand of a row).
template <int N, bool ALIGNED, typename T>
__device__ __forceinline__ void load_or_zeros(const T* p, int valid, acc_t<T> (&out)[N]) {
  if (p != nullptr) {
    load<N, ALIGNED>(p, valid, out);
    return;
  }
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = acc_t<T>(0);
}

// ------------------------------------------------------------------- grids

// Blocks of kThreads threads of KERNEL that one SM of launch.device keeps
// resident: the occupancy API's answer (registers, shared memory, the
// device's limits), asked once per kernel and device. The kernels use 16 to
// 98 registers a thread, so this is 2 to 8, not max threads / kThreads.
template <auto KERNEL>
int resident_blocks_per_sm(const Launch& launch) {
  constexpr int kCachedDevices = 64;
  static std::atomic<int> cached[kCachedDevices] = {};  // 0: not asked yet
  const bool cacheable = launch.device >= 0 && launch.device < kCachedDevices;
  if (cacheable) {
    const int known = cached[launch.device].load(std::memory_order_relaxed);
    if (known > 0) return known;
  }
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, KERNEL, kThreads, 0) != cudaSuccess || blocks < 1) {
    // No answer (no kernel image for this device, say): the launch reports the error.
    cudaGetLastError();
    return 1;
  }
  if (cacheable) cached[launch.device].store(blocks, std::memory_order_relaxed);
  return blocks;
}

// At most as many blocks of KERNEL as the device keeps resident; grid-stride
// loops do the rest. Never zero, so a kernel with side work (writing
// rng_state) runs.
template <auto KERNEL>
unsigned grid_for(const Launch& launch, int64_t blocks_of_work) {
  const int64_t resident =
      static_cast<int64_t>(launch.sm_count > 0 ? launch.sm_count : 1) * resident_blocks_per_sm<KERNEL>(launch);
  const int64_t blocks = blocks_of_work < resident ? blocks_of_work : resident;
  return static_cast<unsigned>(blocks > 0 ? blocks : 1);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Runs fn(T{}) for the C++ type of dtype.
template <typename Fn>
cudaError_t dispatch(Dtype dtype, const Fn& fn) {
  switch (dtype) {
    case Dtype::kFloat32:
      return fn(float{});
    case Dtype::kFloat64:
      return fn(double{});
    case Dtype::kFloat16:
      return fn(__half{});
    case Dtype::kBFloat16:
      return fn(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// Runs fn(std::integral_constant<bool, aligned>{}).
template <typename Fn>
cudaError_t dispatch_aligned(bool aligned, const Fn& fn) {
  return aligned ? fn(std::true_type{}) : fn(std::false_type{});
}

// -------------------------------------------------------- elementwise groups

// Calls op.apply<N, ALIGNED>(first, valid) for every group of N consecutive
// elements of [0, total), grid-stride. ALIGNED: the caller guarantees that
// every group starts 16-byte aligned in every array the op touches (aligned
// pointers, and rows or samples that are whole groups); a partial last group
// takes the scalar path.
template <typename Op, int N, bool ALIGNED>
__global__ void __launch_bounds__(kThreads) for_each_group_kernel(Op op, int64_t total) {
  if (blockIdx.x == 0 && threadIdx.x == 0) op.per_launch();
  const int64_t groups = (total + N - 1) / N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; g < groups; g += stride) {
    const int valid = group_valid(g * N, total, N);
    if (ALIGNED && valid < N) {
      op.template apply<N, false>(g * N, valid);
    } else {
      op.template apply<N, ALIGNED>(g * N, valid);
    }
  }
}

template <int N, typename Op>
cudaError_t for_each_group(const Launch& launch, const Op& op, int64_t total, bool aligned) {
  return dispatch_aligned(aligned, [&](auto aligned_tag) {
    constexpr bool kAligned = decltype(aligned_tag)::value;
    constexpr auto kernel = for_each_group_kernel<Op, N, kAligned>;
    const unsigned grid = grid_for<kernel>(launch, ceil_div(ceil_div(total, N), kThreads));
    kernel<<<grid, kThreads, 0, launch.stream>>>(op, total);
    return cudaGetLastError();
  });
}

// for_each_group over a rows x cols array whose op also needs the (row,
// column) of each group: op.apply<N, ALIGNED>(first, valid, cursor). Each
// thread divides once, where it starts, and steps its cursor by the grid
// stride (`step`, divided on the host) after that: no division per group.
// ALIGNED as for for_each_group, and then cols % N == 0 (a group lies in one row).
template <typename Op, int N, bool ALIGNED>
__global__ void __launch_bounds__(kThreads)
    for_each_row_group_kernel(Op op, int64_t total, int64_t cols, RowStep step) {
  if (blockIdx.x == 0 && threadIdx.x == 0) op.per_launch();
  const int64_t groups = (total + N - 1) / N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  int64_t g = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (g >= groups) return;  // also every thread when total == 0 (cols may be 0 then)
  RowCursor at(g * N, cols);
  for (; g < groups; g += stride) {
    const int valid = group_valid(g * N, total, N);
    if (ALIGNED && valid < N) {
      op.template apply<N, false>(g * N, valid, at);
    } else {
      op.template apply<N, ALIGNED>(g * N, valid, at);
    }
    at.advance(step, cols);
  }
}

template <int N, typename Op>
cudaError_t for_each_row_group(const Launch& launch, const Op& op, Rows shape, bool aligned) {
  return dispatch_aligned(aligned && shape.cols % N == 0, [&](auto aligned_tag) {
    constexpr bool kAligned = decltype(aligned_tag)::value;
    constexpr auto kernel = for_each_row_group_kernel<Op, N, kAligned>;
    const int64_t total = shape.rows * shape.cols;
    const unsigned grid = grid_for<kernel>(launch, ceil_div(ceil_div(total, N), kThreads));
    const RowStep step = row_step(static_cast<int64_t>(grid) * kThreads * N, shape.cols);
    kernel<<<grid, kThreads, 0, launch.stream>>>(op, total, shape.cols, step);
    return cudaGetLastError();
  });
}

// Ops without work of their own per launch.
struct NoLaunchWork {
  __device__ __forceinline__ void per_launch() const {}
};

// ---------------------------------------------------------------- row sums
//
// An Op of a row sum provides
//   scalar_t;  Row row(int64_t r, int64_t cols);  (its operands' row pointers)
//   void terms<N, ALIGNED>(const Row&, int64_t col, int valid, acc_t<scalar_t> (&out)[N]);
//     (the terms of columns [col, col + valid), valid <= N; out[i] for i >= valid is unspecified)
//   void per_launch();  (work done once per launch by one thread)
// The order of every addition depends on cols and N only.

template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc value, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// The block's total, in thread 0.
template <typename Acc>
__device__ __forceinline__ Acc block_sum(Acc value, Acc* warp_sums) {
  value = warp_sum(value, kWarp);
  if (threadIdx.x % kWarp == 0) warp_sums[threadIdx.x / kWarp] = value;
  __syncthreads();
  Acc total = Acc(0);
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / kWarp; ++w) total += warp_sums[w];
  }
  __syncthreads();  // warp_sums is free again
  return total;
}

// The sum of op's terms of columns [col, col + valid) of a row, in column order.
template <int N, bool ALIGNED, typename Op, typename Row>
__device__ __forceinline__ acc_t<typename Op::scalar_t> sum_of_terms(const Op& op, const Row& row, int64_t col,
                                                                     int valid) {
  using Acc = acc_t<typename Op::scalar_t>;
  Acc terms[N];
  op.template terms<N, ALIGNED>(row, col, valid, terms);
  Acc total = Acc(0);
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if (ALIGNED || i < valid) total += terms[i];
  }
  return total;
}

// Short rows: `width` lanes (a power of two up to a warp) per row, so a warp
// sums kWarp / width rows at once.
template <typename Op, int N, bool ALIGNED>
__global__ void __launch_bounds__(kThreads)
    row_sums_by_lanes(Op op, int64_t rows, int64_t cols, int width, acc_t<typename Op::scalar_t>* out) {
  using Acc = acc_t<typename Op::scalar_t>;
  if (blockIdx.x == 0 && threadIdx.x == 0) op.per_launch();
  const int lane = threadIdx.x % kWarp;
  const int rows_per_warp = kWarp / width;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / kWarp);
  // The loop condition is the same for every lane of a warp, as the shuffles need.
  for (int64_t first = warp * rows_per_warp; first < rows; first += warps * rows_per_warp) {
    const int64_t r = first + lane / width;
    Acc sum = Acc(0);
    if (r < rows) {
      const auto row = op.row(r, cols);
      for (int64_t c = static_cast<int64_t>(lane % width) * N; c < cols; c += static_cast<int64_t>(width) * N) {
        sum += sum_of_terms<N, ALIGNED>(op, row, c, group_valid(c, cols, N));
      }
    }
    sum = warp_sum(sum, width);
    if (r < rows && lane % width == 0) out[r] = sum;
  }
}

// Long rows: one block per (row, chunk of kRowChunk columns); out holds
// rows * chunks sums (the row sums themselves when chunks == 1).
template <typename Op, int N, bool ALIGNED>
__global__ void __launch_bounds__(kThreads)
    row_sums_by_blocks(Op op, int64_t rows, int64_t cols, int64_t chunks, acc_t<typename Op::scalar_t>* out) {
  using Acc = acc_t<typename Op::scalar_t>;
  __shared__ Acc warp_sums[kThreads / kWarp];
  if (blockIdx.x == 0 && threadIdx.x == 0) op.per_launch();
  for (int64_t task = blockIdx.x; task < rows * chunks; task += gridDim.x) {
    const int64_t r = task / chunks;
    const int64_t begin = (task - r * chunks) * kRowChunk;
    const int64_t end = begin + kRowChunk < cols ? begin + kRowChunk : cols;
    const auto row = op.row(r, cols);
    Acc sum = Acc(0);
    for (int64_t c = begin + static_cast<int64_t>(threadIdx.x) * N; c < end; c += static_cast<int64_t>(kThreads) * N) {
      sum += sum_of_terms<N, ALIGNED>(op, row, c, group_valid(c, cols, N));
    }
    sum = block_sum(sum, warp_sums);
    if (threadIdx.x == 0) out[task] = sum;
  }
}

// Rows of one column (event_dims=0: one term per output). ALIGNED (rows and
// every operand's period whole groups, every pointer 16-byte aligned): the
// rows are one flat array, and a thread takes N consecutive rows as one group
// of 128-bit loads and stores, as for_each_group does. Otherwise lanes of a
// warp take consecutive rows, one element each, and each thread N rows a
// block apart: N independent loads in flight per thread.
template <typename Op, int N, bool ALIGNED>
__global__ void __launch_bounds__(kThreads)
    row_sums_of_one_column(Op op, int64_t rows, acc_t<typename Op::scalar_t>* out) {
  using Acc = acc_t<typename Op::scalar_t>;
  if (blockIdx.x == 0 && threadIdx.x == 0) op.per_launch();
  if constexpr (ALIGNED) {
    const int64_t groups = rows / N;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
    for (int64_t g = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; g < groups; g += stride) {
      Acc terms[N];
      op.template terms<N, true>(op.row(g * N, 1), 0, N, terms);
      store<N, true>(out + g * N, N, terms);
    }
  } else {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads * N;
    for (int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads * N + threadIdx.x; first < rows;
         first += stride) {
      Acc sums[N];
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const int64_t r = first + static_cast<int64_t>(i) * kThreads;
        if (r < rows) sums[i] = sum_of_terms<N, false>(op, op.row(r, 1), 0, 1);  // as a width-1 lane group does
      }
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const int64_t r = first + static_cast<int64_t>(i) * kThreads;
        if (r < rows) out[r] = sums[i];
      }
    }
  }
}

template <typename Acc>
__global__ void __launch_bounds__(kThreads) add_partials(const Acc* partials, int64_t rows, int64_t chunks, Acc* out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; r < rows; r += stride) {
    Acc sum = Acc(0);
    for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += partials[r * chunks + chunk];
    out[r] = sum;
  }
}

// out[r] = the sum of op's terms over row r. `aligned`: every operand is
// aligned_groups<N> (16-byte aligned, its period whole groups); the sums then
// take 128-bit loads when cols % N == 0 (every row starts on a whole pack) or,
// with one column, when rows % N == 0 and out is aligned too; otherwise masked
// scalar loads.
template <int N, typename Op>
cudaError_t row_sums(const Launch& launch, const Op& op, Rows shape, bool aligned, void* out, void* partials) {
  using Acc = acc_t<typename Op::scalar_t>;
  if (shape.cols == 1) {
    return dispatch_aligned(aligned && shape.rows % N == 0 && aligned16(out), [&](auto aligned_tag) {
      constexpr auto one_column = row_sums_of_one_column<Op, N, decltype(aligned_tag)::value>;
      one_column<<<grid_for<one_column>(launch, ceil_div(shape.rows, kThreads * N)), kThreads, 0, launch.stream>>>(
          op, shape.rows, static_cast<Acc*>(out));
      return cudaGetLastError();
    });
  }
  return dispatch_aligned(aligned && shape.cols % N == 0, [&](auto aligned_tag) {
    constexpr bool kAligned = decltype(aligned_tag)::value;
    Acc* sums = static_cast<Acc*>(out);
    if (shape.cols <= static_cast<int64_t>(kWarp) * N * kLaneIters) {
      int width = 1;
      while (width < kWarp && static_cast<int64_t>(width) * N < shape.cols) width *= 2;
      constexpr auto by_lanes = row_sums_by_lanes<Op, N, kAligned>;
      const unsigned grid = grid_for<by_lanes>(launch, ceil_div(shape.rows, kThreads / width));
      by_lanes<<<grid, kThreads, 0, launch.stream>>>(op, shape.rows, shape.cols, width, sums);
      return cudaGetLastError();
    }
    const int64_t chunks = ceil_div(shape.cols, kRowChunk);
    Acc* chunk_sums = chunks > 1 ? static_cast<Acc*>(partials) : sums;
    constexpr auto by_blocks = row_sums_by_blocks<Op, N, kAligned>;
    by_blocks<<<grid_for<by_blocks>(launch, shape.rows * chunks), kThreads, 0, launch.stream>>>(
        op, shape.rows, shape.cols, chunks, chunk_sums);
    if (chunks > 1) {
      constexpr auto add = add_partials<Acc>;
      add<<<grid_for<add>(launch, ceil_div(shape.rows, kThreads)), kThreads, 0, launch.stream>>>(chunk_sums, shape.rows,
                                                                                                 chunks, sums);
    }
    return cudaGetLastError();
  });
}

// ------------------------------------------------------------------- noise

// The four normals of randn4x(seed, offset + counter).
__device__ __forceinline__ void normals4(PhiloxSeedOffset stream, uint64_t counter, float (&out)[4]) {
  const Philox4 bits = philox4x32_10(stream.seed, stream.offset + counter);
  box_muller(uint32_to_uniform(bits.x[0]), uint32_to_uniform(bits.x[1]), out[0], out[1]);
  box_muller(uint32_to_uniform(bits.x[2]), uint32_to_uniform(bits.x[3]), out[2], out[3]);
}

// eps[q] = element first + q of the stream for q < N (N a multiple of 4):
// one Philox call per four outputs when first is a multiple of 4, two when
// the four straddle a counter. WHOLE: the caller guarantees first % 4 == 0
// (every ALIGNED group of the noise kernels), and the straddling path, its
// registers and its local array, are compiled out.
template <int N, bool WHOLE = false, typename Acc>
__device__ __forceinline__ void stream_normals(PhiloxSeedOffset stream, uint64_t first, Acc (&eps)[N]) {
  static_assert(N % 4 == 0, "whole Philox outputs");
  const int shift = WHOLE ? 0 : static_cast<int>(first % 4);
  uint64_t counter = first / 4;
  float current[4];
  normals4(stream, counter, current);
#pragma unroll
  for (int q = 0; q < N; q += 4) {
    if (shift == 0) {
#pragma unroll
      for (int i = 0; i < 4; ++i) eps[q + i] = static_cast<Acc>(current[i]);
      if (q + 4 < N) normals4(stream, ++counter, current);
      continue;
    }
    float next[4];
    normals4(stream, ++counter, next);
    // Constant indices only, so both arrays stay in registers.
    const float both[8] = {current[0], current[1], current[2], current[3], next[0], next[1], next[2], next[3]};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      eps[q + i] = static_cast<Acc>(shift == 1 ? both[i + 1] : shift == 2 ? both[i + 2] : both[i + 3]);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) current[i] = next[i];
  }
}

__device__ __forceinline__ PhiloxSeedOffset read_state(const int64_t* rng_state) {
  return {static_cast<uint64_t>(rng_state[0]), static_cast<uint64_t>(rng_state[1])};
}

__device__ __forceinline__ void write_state(int64_t* rng_state, PhiloxSeedOffset stream) {
  rng_state[0] = static_cast<int64_t>(stream.seed);
  rng_state[1] = static_cast<int64_t>(stream.offset);
}

}  // namespace fastgen::cuda
