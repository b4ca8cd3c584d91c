// CUDA ops reparameterize_log_weights(+_backward): checks, outputs, the
// per-row workspace and the generator's Philox state; the kernels are in
// reparameterize_log_weights_kernels.cu.
#include <torch/library.h>

#include "glue.h"
#include "row_shape.h"

namespace fastgen::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> reparameterize_log_weights_cuda(
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const std::optional<at::Tensor>& prior_mu_opt,
    const std::optional<at::Tensor>& prior_logvar_opt, std::optional<int64_t> num_samples, int64_t event_dims,
    std::optional<at::Generator> generator) {
  const char* op = "reparameterize_log_weights";
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const int64_t samples = sample_count(num_samples, op);
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const at::Tensor prior_mu = prior_mu_opt.value_or(at::Tensor());
  const at::Tensor prior_logvar = prior_logvar_opt.value_or(at::Tensor());
  const RowShape shape = sample_row_shape(mu, logvar, prior_mu, prior_logvar, event_dims, op);
  at::Tensor z = at::empty(samples_shape(mu, num_samples), mu.options());
  at::Tensor log_weights = at::empty({samples * shape.rows}, mu.options().dtype(row_sum_dtype(mu.scalar_type())));
  at::Tensor rng_state = at::empty({2}, mu.options().dtype(at::kLong));
  at::Tensor partials = row_sum_workspace(Rows{samples * shape.rows, shape.cols}, log_weights);
  const PhiloxCudaArgs philox = next_philox_args(generator, samples * mu.numel());
  check_launch(reparameterize_log_weights(current_launch(), dtype_of(mu, op), Rows{shape.rows, shape.cols}, samples,
                                          mu.const_data_ptr(), logvar.const_data_ptr(), operand_of(prior_mu),
                                          operand_of(prior_logvar), z.data_ptr(), log_weights.data_ptr(),
                                          partials.data_ptr(), philox, rng_state.data_ptr<int64_t>()));
  return {z, log_weights, rng_state};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> reparameterize_log_weights_backward_cuda(
    const std::optional<at::Tensor>& grad_z_opt, const std::optional<at::Tensor>& grad_w_opt,
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const std::optional<at::Tensor>& prior_mu_opt,
    const std::optional<at::Tensor>& prior_logvar_opt, const at::Tensor& rng_state,
    std::optional<int64_t> num_samples, int64_t event_dims, bool prior_mu_grad, bool prior_logvar_grad) {
  const char* op = "reparameterize_log_weights_backward";
  check_rng_state(rng_state, mu_in, op);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const at::Tensor prior_mu = prior_mu_opt.value_or(at::Tensor());
  const at::Tensor prior_logvar = prior_logvar_opt.value_or(at::Tensor());
  const RowShape shape = sample_row_shape(mu, logvar, prior_mu, prior_logvar, event_dims, op);
  const int64_t samples = sample_count(num_samples, op);
  const int64_t n = mu.numel();
  at::Tensor grad_z, grad_w;
  if (grad_z_opt && grad_z_opt->defined()) {
    check_on_device(*grad_z_opt, mu, op, "grad_z");
    grad_z = grad_z_opt->to(mu.scalar_type()).contiguous();
    TORCH_CHECK(grad_z.numel() == samples * n, "fastgen.", op, ": grad_z has ", grad_z.numel(), " elements, expected ",
                samples * n);
  }
  if (grad_w_opt && grad_w_opt->defined()) {
    check_on_device(*grad_w_opt, mu, op, "grad_log_weights");
    grad_w = grad_w_opt->to(row_sum_dtype(mu.scalar_type())).contiguous();
    TORCH_CHECK(grad_w.numel() == samples * shape.rows, "fastgen.", op, ": grad_log_weights has ", grad_w.numel(),
                " elements, expected ", samples * shape.rows);
  }
  at::Tensor grad_mu = at::empty_like(mu);
  at::Tensor grad_logvar = at::empty_like(logvar);
  at::Tensor grad_prior_mu = at::empty({prior_mu_grad ? n : 0}, mu.options());
  at::Tensor grad_prior_logvar = at::empty({prior_logvar_grad ? n : 0}, mu.options());
  check_launch(reparameterize_log_weights_backward(
      current_launch(), dtype_of(mu, op), Rows{shape.rows, shape.cols}, samples,
      grad_z.defined() ? grad_z.const_data_ptr() : nullptr, grad_w.defined() ? grad_w.const_data_ptr() : nullptr,
      mu.const_data_ptr(), logvar.const_data_ptr(), operand_of(prior_mu), operand_of(prior_logvar),
      rng_state.const_data_ptr<int64_t>(), grad_mu.data_ptr(), grad_logvar.data_ptr(),
      data_or_null(grad_prior_mu, prior_mu_grad), data_or_null(grad_prior_logvar, prior_logvar_grad)));
  return {grad_mu, grad_logvar, grad_prior_mu, grad_prior_logvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("_reparameterize_log_weights", &reparameterize_log_weights_cuda);
  m.impl("_reparameterize_log_weights_backward", &reparameterize_log_weights_backward_cuda);
}

}  // namespace fastgen::cuda
