// CUDA ops gaussian_kl(+_backward): checks, outputs and the per-row
// workspace; the kernels are in gaussian_kl_kernels.cu.
#include <torch/library.h>

#include "glue.h"
#include "row_shape.h"

namespace fastgen::cuda {
namespace {

at::Tensor gaussian_kl_cuda(const at::Tensor& mu, const at::Tensor& logvar,
                            const std::optional<at::Tensor>& prior_mu_opt,
                            const std::optional<at::Tensor>& prior_logvar_opt, int64_t event_dims) {
  const char* op = "gaussian_kl";
  const at::Tensor prior_mu = prior_mu_opt.value_or(at::Tensor());
  const at::Tensor prior_logvar = prior_logvar_opt.value_or(at::Tensor());
  const RowShape shape = row_shape(mu, {&logvar, &prior_mu, &prior_logvar}, event_dims, op);
  const c10::cuda::CUDAGuard guard(mu.device());
  at::Tensor out = at::empty({shape.rows}, mu.options().dtype(row_sum_dtype(mu.scalar_type())));
  const Rows rows{shape.rows, shape.cols};
  at::Tensor partials = row_sum_workspace(rows, out);
  check_launch(gaussian_kl(current_launch(), dtype_of(mu, op), rows, operand_of(mu), operand_of(logvar),
                           operand_of(prior_mu), operand_of(prior_logvar), out.data_ptr(), partials.data_ptr()));
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gaussian_kl_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& mu, const at::Tensor& logvar,
    const std::optional<at::Tensor>& prior_mu_opt, const std::optional<at::Tensor>& prior_logvar_opt,
    int64_t event_dims, bool prior_logvar_grad) {
  const char* op = "gaussian_kl_backward";
  const at::Tensor prior_mu = prior_mu_opt.value_or(at::Tensor());
  const at::Tensor prior_logvar = prior_logvar_opt.value_or(at::Tensor());
  const RowShape shape = row_shape(mu, {&logvar, &prior_mu, &prior_logvar}, event_dims, op);
  check_on_device(grad_in, mu, op, "grad");
  const c10::cuda::CUDAGuard guard(mu.device());
  const at::Tensor grad = row_grad(grad_in, mu.scalar_type(), shape.rows, "gaussian_kl_backward");
  // Gradients of broadcast operands come back at full size; ops.py sums them down.
  const int64_t total = shape.rows * shape.cols;
  at::Tensor grad_mu = at::empty({total}, mu.options());
  at::Tensor grad_logvar = at::empty({total}, mu.options());
  at::Tensor grad_prior_logvar = at::empty({prior_logvar_grad ? total : 0}, mu.options());
  check_launch(gaussian_kl_backward(current_launch(), dtype_of(mu, op), Rows{shape.rows, shape.cols},
                                    grad.const_data_ptr(), operand_of(mu), operand_of(logvar), operand_of(prior_mu),
                                    operand_of(prior_logvar), grad_mu.data_ptr(), grad_logvar.data_ptr(),
                                    data_or_null(grad_prior_logvar, prior_logvar_grad)));
  return {grad_mu, grad_logvar, grad_prior_logvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("_gaussian_kl", &gaussian_kl_cuda);
  m.impl("_gaussian_kl_backward", &gaussian_kl_backward_cuda);
}

}  // namespace fastgen::cuda
