// CUDA ops grad_norm_penalty(+_backward) and random_interpolate: checks,
// outputs, the per-row workspace and the generator's Philox state; the
// kernels are in grad_norm_penalty_kernels.cu.
#include <torch/library.h>

#include "glue.h"
#include "row_shape.h"

namespace fastgen::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> grad_norm_penalty_cuda(const at::Tensor& grad_in, double center,
                                                          int64_t event_dims) {
  const char* op = "grad_norm_penalty";
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const RowShape shape = row_shape(grad, {}, event_dims, op);
  const at::ScalarType sum_dtype = row_sum_dtype(grad.scalar_type());
  at::Tensor penalty = at::empty({shape.rows}, grad.options().dtype(sum_dtype));
  at::Tensor norm = at::empty({shape.rows}, grad.options().dtype(sum_dtype));
  const Rows rows{shape.rows, shape.cols};
  at::Tensor partials = row_sum_workspace(rows, norm);
  check_launch(grad_norm_penalty(current_launch(), dtype_of(grad, op), rows, grad.const_data_ptr(), center,
                                 penalty.data_ptr(), norm.data_ptr(), partials.data_ptr()));
  return {penalty, norm};
}

at::Tensor grad_norm_penalty_backward_cuda(const at::Tensor& grad_penalty, const at::Tensor& grad_in,
                                           const at::Tensor& norm_in, double center, int64_t event_dims) {
  const char* op = "grad_norm_penalty_backward";
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const RowShape shape = row_shape(grad, {}, event_dims, op);
  check_on_device(grad_penalty, grad, op, "grad_penalty");
  check_on_device(norm_in, grad, op, "norm");
  const at::Tensor upstream = row_grad(grad_penalty, grad.scalar_type(), shape.rows, op);
  TORCH_CHECK(norm_in.numel() == shape.rows, "fastgen.", op, ": norm has ", norm_in.numel(), " elements, expected ",
              shape.rows);
  const at::Tensor norm = norm_in.to(row_sum_dtype(grad.scalar_type())).contiguous();
  at::Tensor out = at::empty_like(grad);
  if (out.numel() == 0) return out;
  check_launch(grad_norm_penalty_backward(current_launch(), dtype_of(grad, op), Rows{shape.rows, shape.cols},
                                          upstream.const_data_ptr(), grad.const_data_ptr(), norm.const_data_ptr(),
                                          center, out.data_ptr()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> random_interpolate_cuda(const at::Tensor& real_in, const at::Tensor& fake_in,
                                                           std::optional<at::Generator> generator) {
  const char* op = "random_interpolate";
  TORCH_CHECK(real_in.sizes() == fake_in.sizes() && real_in.scalar_type() == fake_in.scalar_type(), "fastgen.", op,
              ": real and fake must share shape and dtype");
  check_on_device(fake_in, real_in, op, "fake");
  const c10::cuda::CUDAGuard guard(real_in.device());
  const at::Tensor real = real_in.contiguous();
  const at::Tensor fake = fake_in.contiguous();
  // Samples along dim 0 (a 0-dim tensor is one sample), one Philox counter each.
  const int64_t rows = real.dim() > 0 ? real.size(0) : 1;
  const int64_t cols = rows > 0 ? real.numel() / rows : 0;
  at::Tensor weights = at::empty({rows}, real.options().dtype(at::kFloat));
  at::Tensor out = at::empty_like(real);
  const PhiloxCudaArgs philox = next_philox_args(generator, 4 * rows);
  if (rows == 0) return {out, weights};
  check_launch(random_interpolate(current_launch(), dtype_of(real, op), Rows{rows, cols}, real.const_data_ptr(),
                                  fake.const_data_ptr(), philox, weights.data_ptr<float>(), out.data_ptr()));
  return {out, weights};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("_grad_norm_penalty", &grad_norm_penalty_cuda);
  m.impl("_grad_norm_penalty_backward", &grad_norm_penalty_backward_cuda);
  m.impl("_random_interpolate", &random_interpolate_cuda);
}

}  // namespace fastgen::cuda
