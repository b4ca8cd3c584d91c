// Torch-side glue shared by the CUDA ops (csrc/cuda/<op>.cpp): the launch
// target of the current device and stream, operands and dtypes as the
// torch-free launch functions take them (launch.h), the generator's Philox
// state, and errors turned into exceptions.
#pragma once

// Light CUDA headers only: ATen/cuda/CUDAContext.h would pull in the cuBLAS
// and cuSPARSE headers, which a bare toolkit (nvcc alone) lacks.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <mutex>
#include <optional>
#include <vector>

#include "launch.h"

namespace fastgen::cuda {

inline Dtype dtype_of(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return Dtype::kFloat32;
    case at::kDouble:
      return Dtype::kFloat64;
    case at::kHalf:
      return Dtype::kFloat16;
    case at::kBFloat16:
      return Dtype::kBFloat16;
    default:
      TORCH_CHECK(false, "fastgen.", op, ": expected float32, float64, float16 or bfloat16 tensors, got ",
                  t.scalar_type());
  }
}

// The current stream of the current device (set by the op's CUDAGuard) and
// the number of SMs of that device (an attribute query is a cheap host call).
inline Launch current_launch() {
  const int device = c10::cuda::current_device();
  int sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  return {c10::cuda::getCurrentCUDAStream().stream(), device, sm_count};
}

inline Operand operand_of(const at::Tensor& t) {
  if (!t.defined()) return {};
  return {t.const_data_ptr(), std::max<int64_t>(t.numel(), 1)};
}

// The pointer of an output that may be absent (an empty tensor when not wanted).
inline void* data_or_null(at::Tensor& t, bool wanted) { return wanted ? t.data_ptr() : nullptr; }

inline void check_launch(cudaError_t error) { C10_CUDA_CHECK(error); }

inline void check_on_device(const at::Tensor& t, const at::Tensor& first, const char* op, const char* name) {
  TORCH_CHECK(t.device() == first.device(), "fastgen.", op, ": ", name, " must be on ", first.device(),
              ", got ", t.device());
}

inline int64_t sample_count(const std::optional<int64_t>& num_samples, const char* op) {
  TORCH_CHECK(!num_samples || *num_samples >= 1, "fastgen.", op, ": num_samples must be >= 1, got ",
              num_samples.value_or(0));
  return num_samples.value_or(1);
}

// (num_samples, *mu.shape), or mu's shape without num_samples.
inline std::vector<int64_t> samples_shape(const at::Tensor& mu, const std::optional<int64_t>& num_samples) {
  std::vector<int64_t> shape;
  if (num_samples) shape.push_back(*num_samples);
  for (int64_t s : mu.sizes()) shape.push_back(s);
  return shape;
}

// The Philox state of a call that draws `elements` normals: the generator's
// (the device's default unless given) seed and offset, the offset advanced by
// the randn4x counters used (design.md, "The noise stream"). Under CUDA-graph
// capture the state holds device pointers that each replay refreshes.
inline PhiloxCudaArgs next_philox_args(const std::optional<at::Generator>& generator, int64_t elements) {
  auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(generator,
                                                                  at::cuda::detail::getDefaultCUDAGenerator());
  const uint64_t counters = static_cast<uint64_t>((elements + 3) / 4);
  at::PhiloxCudaState state;
  {
    std::lock_guard<std::mutex> lock(gen->mutex_);
    state = gen->philox_cuda_state(counters);
  }
  PhiloxCudaArgs args;
  if (state.captured_) {
    args.captured = true;
    args.seed_ptr = state.seed_.ptr;
    args.offset_ptr = state.offset_.ptr;
    args.offset_intragraph = state.offset_intragraph_;
  } else {
    args.seed = state.seed_.val;
    args.offset = state.offset_.val;
  }
  return args;
}

// rng_state as backward reads it on the device: int64 [seed, offset] beside the inputs.
inline void check_rng_state(const at::Tensor& rng_state, const at::Tensor& first, const char* op) {
  TORCH_CHECK(rng_state.scalar_type() == at::kLong && rng_state.numel() == 2 && rng_state.is_contiguous(),
              "fastgen.", op, ": rng_state must be a contiguous int64 tensor [seed, offset], got ",
              rng_state.scalar_type(), " with ", rng_state.numel(), " elements");
  check_on_device(rng_state, first, op, "rng_state");
}

// The chunk sums of long rows (launch.h, row_sum_partials), beside `out`.
inline at::Tensor row_sum_workspace(Rows rows, const at::Tensor& out) {
  return at::empty({row_sum_partials(rows)}, out.options());
}

}  // namespace fastgen::cuda
