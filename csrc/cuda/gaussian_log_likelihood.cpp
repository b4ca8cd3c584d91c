// CUDA ops gaussian_log_likelihood(+_backward): checks, outputs and the
// per-row workspace; the kernels are in gaussian_log_likelihood_kernels.cu.
#include <torch/library.h>

#include "glue.h"
#include "row_shape.h"

namespace fastgen::cuda {
namespace {

at::Tensor gaussian_log_likelihood_cuda(const at::Tensor& x, const at::Tensor& mean,
                                        const std::optional<at::Tensor>& logvar_opt, int64_t event_dims) {
  const char* op = "gaussian_log_likelihood";
  const at::Tensor logvar = logvar_opt.value_or(at::Tensor());
  const RowShape shape = row_shape(x, {&mean, &logvar}, event_dims, op);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty({shape.rows}, x.options().dtype(row_sum_dtype(x.scalar_type())));
  const Rows rows{shape.rows, shape.cols};
  at::Tensor partials = row_sum_workspace(rows, out);
  check_launch(gaussian_log_likelihood(current_launch(), dtype_of(x, op), rows, operand_of(x), operand_of(mean),
                                       operand_of(logvar), out.data_ptr(), partials.data_ptr()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> gaussian_log_likelihood_backward_cuda(const at::Tensor& grad_in,
                                                                          const at::Tensor& x,
                                                                          const at::Tensor& mean,
                                                                          const std::optional<at::Tensor>& logvar_opt,
                                                                          int64_t event_dims) {
  const char* op = "gaussian_log_likelihood_backward";
  const at::Tensor logvar = logvar_opt.value_or(at::Tensor());
  const RowShape shape = row_shape(x, {&mean, &logvar}, event_dims, op);
  check_on_device(grad_in, x, op, "grad");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor grad = row_grad(grad_in, x.scalar_type(), shape.rows, "gaussian_log_likelihood_backward");
  const int64_t total = shape.rows * shape.cols;
  at::Tensor grad_x = at::empty({total}, x.options());
  at::Tensor grad_logvar = at::empty({logvar.defined() ? total : 0}, x.options());
  check_launch(gaussian_log_likelihood_backward(current_launch(), dtype_of(x, op), Rows{shape.rows, shape.cols},
                                                grad.const_data_ptr(), operand_of(x), operand_of(mean),
                                                operand_of(logvar), grad_x.data_ptr(),
                                                data_or_null(grad_logvar, logvar.defined())));
  return {grad_x, grad_logvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("_gaussian_log_likelihood", &gaussian_log_likelihood_cuda);
  m.impl("_gaussian_log_likelihood_backward", &gaussian_log_likelihood_backward_cuda);
}

}  // namespace fastgen::cuda
