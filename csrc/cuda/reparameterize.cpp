// CUDA ops reparameterize(+_backward) and philox_normal_: checks, outputs and
// the generator's Philox state; the kernels are in reparameterize_kernels.cu.
#include <torch/library.h>

#include "glue.h"

namespace fastgen::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> reparameterize_cuda(const at::Tensor& mu_in, const at::Tensor& logvar_in,
                                                        std::optional<int64_t> num_samples,
                                                        std::optional<at::Generator> generator) {
  TORCH_CHECK(mu_in.sizes() == logvar_in.sizes() && mu_in.scalar_type() == logvar_in.scalar_type(),
              "fastgen.reparameterize: mu and logvar must share shape and dtype");
  check_on_device(logvar_in, mu_in, "reparameterize", "logvar");
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const int64_t samples = sample_count(num_samples, "reparameterize");
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  at::Tensor z = at::empty(samples_shape(mu, num_samples), mu.options());
  at::Tensor rng_state = at::empty({2}, mu.options().dtype(at::kLong));
  const int64_t n = mu.numel();
  const PhiloxCudaArgs philox = next_philox_args(generator, samples * n);
  check_launch(reparameterize(current_launch(), dtype_of(mu, "reparameterize"), n, samples, mu.const_data_ptr(),
                              logvar.const_data_ptr(), z.data_ptr(), philox, rng_state.data_ptr<int64_t>()));
  return {z, rng_state};
}

at::Tensor reparameterize_backward_cuda(const at::Tensor& grad_z_in, const at::Tensor& logvar_in,
                                        const at::Tensor& rng_state, std::optional<int64_t> num_samples) {
  const char* op = "reparameterize_backward";
  check_on_device(grad_z_in, logvar_in, op, "grad_z");
  check_rng_state(rng_state, logvar_in, op);
  const c10::cuda::CUDAGuard guard(logvar_in.device());
  const int64_t samples = sample_count(num_samples, op);
  const at::Tensor logvar = logvar_in.contiguous();
  const at::Tensor grad_z = grad_z_in.to(logvar.scalar_type()).contiguous();
  TORCH_CHECK(grad_z.numel() == samples * logvar.numel(), "fastgen.reparameterize_backward: grad_z has ",
              grad_z.numel(), " elements, expected ", samples * logvar.numel());
  at::Tensor grad_logvar = at::empty_like(logvar);
  check_launch(reparameterize_backward(current_launch(), dtype_of(logvar, op), logvar.numel(), samples,
                                       grad_z.const_data_ptr(), logvar.const_data_ptr(),
                                       rng_state.const_data_ptr<int64_t>(), grad_logvar.data_ptr()));
  return grad_logvar;
}

at::Tensor& philox_normal_cuda(at::Tensor& out, int64_t seed, int64_t offset) {
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous(),
              "fastgen.philox_normal_: out must be a contiguous float32 tensor");
  const c10::cuda::CUDAGuard guard(out.device());
  check_launch(philox_normal(current_launch(), out.data_ptr<float>(), out.numel(), static_cast<uint64_t>(seed),
                             static_cast<uint64_t>(offset)));
  return out;
}

at::Tensor philox_state_cuda(const at::Tensor& like, std::optional<at::Generator> generator, int64_t elements) {
  const c10::cuda::CUDAGuard guard(like.device());
  at::Tensor rng_state = at::empty({2}, like.options().dtype(at::kLong));
  check_launch(philox_state(current_launch(), next_philox_args(generator, elements), rng_state.data_ptr<int64_t>()));
  return rng_state;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("philox_state", &philox_state_cuda);
  m.impl("_reparameterize", &reparameterize_cuda);
  m.impl("_reparameterize_backward", &reparameterize_backward_cuda);
  m.impl("philox_normal_", &philox_normal_cuda);
}

}  // namespace fastgen::cuda
