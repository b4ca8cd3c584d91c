// CUDA op clamp_: the list's pointers and sizes handed to the multi-tensor
// kernel of clamp_kernels.cu, which clamps them all in place in one launch
// (more only for lists beyond one launch's argument space).
#include <torch/library.h>

#include "glue.h"

namespace fastgen::cuda {
namespace {

void clamp_cuda(at::TensorList tensors, double min_value, double max_value) {
  TORCH_CHECK(min_value <= max_value, "fastgen.clamp_: min (", min_value, ") must not exceed max (", max_value, ")");
  if (tensors.empty()) return;
  const at::Tensor& first = tensors[0];
  std::vector<void*> data;
  std::vector<int64_t> numels;
  data.reserve(tensors.size());
  numels.reserve(tensors.size());
  for (size_t t = 0; t < tensors.size(); ++t) {
    const at::Tensor& tensor = tensors[t];
    TORCH_CHECK(tensor.scalar_type() == first.scalar_type() && tensor.device() == first.device(),
                "fastgen.clamp_: every tensor of a group must share one dtype and device; tensor ", t, " is ",
                tensor.scalar_type(), " on ", tensor.device(), ", tensor 0 ", first.scalar_type(), " on ",
                first.device());
    TORCH_CHECK(tensor.is_contiguous() || tensor.numel() == 0, "fastgen.clamp_: tensor ", t,
                " must be contiguous (fastgen.clamp_ handles other layouts before calling the kernel)");
    data.push_back(tensor.numel() == 0 ? nullptr : tensor.data_ptr());
    numels.push_back(tensor.numel());
  }
  const c10::cuda::CUDAGuard guard(first.device());
  check_launch(clamp(current_launch(), dtype_of(first, "clamp_"), data.data(), numels.data(),
                     static_cast<int64_t>(data.size()), min_value, max_value));
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) { m.impl("_clamp_", &clamp_cuda); }

}  // namespace fastgen::cuda
