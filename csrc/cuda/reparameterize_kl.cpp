// CUDA ops reparameterize_kl(+_backward): checks, outputs, the per-row
// workspace and the generator's Philox state; the kernels are in
// reparameterize_kl_kernels.cu.
#include <torch/library.h>

#include "glue.h"
#include "row_shape.h"

namespace fastgen::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> reparameterize_kl_cuda(
    const at::Tensor& mu_in, const at::Tensor& logvar_in, std::optional<int64_t> num_samples,
    int64_t event_dims, std::optional<at::Generator> generator) {
  const char* op = "reparameterize_kl";
  TORCH_CHECK(mu_in.sizes() == logvar_in.sizes(), "fastgen.reparameterize_kl: mu and logvar must share a shape");
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const int64_t samples = sample_count(num_samples, op);
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const RowShape shape = row_shape(mu, {&logvar}, event_dims, op);
  at::Tensor z = at::empty(samples_shape(mu, num_samples), mu.options());
  at::Tensor kl = at::empty({shape.rows}, mu.options().dtype(row_sum_dtype(mu.scalar_type())));
  at::Tensor rng_state = at::empty({2}, mu.options().dtype(at::kLong));
  const Rows rows{shape.rows, shape.cols};
  at::Tensor partials = row_sum_workspace(rows, kl);
  const PhiloxCudaArgs philox = next_philox_args(generator, samples * mu.numel());
  check_launch(reparameterize_kl(current_launch(), dtype_of(mu, op), rows, samples, mu.const_data_ptr(),
                                 logvar.const_data_ptr(), z.data_ptr(), kl.data_ptr(), partials.data_ptr(), philox,
                                 rng_state.data_ptr<int64_t>()));
  return {z, kl, rng_state};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cuda(
    const std::optional<at::Tensor>& grad_z_opt, const std::optional<at::Tensor>& grad_kl_opt,
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const at::Tensor& rng_state,
    std::optional<int64_t> num_samples, int64_t event_dims) {
  const char* op = "reparameterize_kl_backward";
  check_rng_state(rng_state, mu_in, op);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const RowShape shape = row_shape(mu, {&logvar}, event_dims, op);
  const int64_t samples = sample_count(num_samples, op);
  const int64_t n = mu.numel();
  at::Tensor grad_z, grad_kl;
  if (grad_z_opt && grad_z_opt->defined()) {
    check_on_device(*grad_z_opt, mu, op, "grad_z");
    grad_z = grad_z_opt->to(mu.scalar_type()).contiguous();
    TORCH_CHECK(grad_z.numel() == samples * n, "fastgen.reparameterize_kl_backward: grad_z has ", grad_z.numel(),
                " elements, expected ", samples * n);
  }
  if (grad_kl_opt && grad_kl_opt->defined()) {
    check_on_device(*grad_kl_opt, mu, op, "grad_kl");
    grad_kl = grad_kl_opt->to(row_sum_dtype(mu.scalar_type())).contiguous();
    TORCH_CHECK(grad_kl.numel() == shape.rows, "fastgen.reparameterize_kl_backward: grad_kl has ",
                grad_kl.numel(), " elements, expected ", shape.rows);
  }
  at::Tensor grad_mu = at::empty_like(mu);
  at::Tensor grad_logvar = at::empty_like(logvar);
  check_launch(reparameterize_kl_backward(
      current_launch(), dtype_of(mu, op), Rows{shape.rows, shape.cols}, samples,
      grad_z.defined() ? grad_z.const_data_ptr() : nullptr, grad_kl.defined() ? grad_kl.const_data_ptr() : nullptr,
      mu.const_data_ptr(), logvar.const_data_ptr(), rng_state.const_data_ptr<int64_t>(), grad_mu.data_ptr(),
      grad_logvar.data_ptr()));
  return {grad_mu, grad_logvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("_reparameterize_kl", &reparameterize_kl_cuda);
  m.impl("_reparameterize_kl_backward", &reparameterize_kl_backward_cuda);
}

}  // namespace fastgen::cuda
