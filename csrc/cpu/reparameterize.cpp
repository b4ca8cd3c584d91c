// CPU kernels of reparameterize (z = mu + exp(logvar / 2) * eps) and of the
// raw noise stream. eps is drawn block by block from (seed, offset) and
// regenerated the same way in backward; it is never stored.
#include <torch/library.h>

#include "kernel_utils.h"

namespace fastgen::cpu {
namespace {

int64_t sample_count(const std::optional<int64_t>& num_samples) {
  TORCH_CHECK(!num_samples || *num_samples >= 1, "fastgen.reparameterize: num_samples must be >= 1, got ",
              num_samples.value_or(0));
  return num_samples.value_or(1);
}

std::vector<int64_t> samples_shape(const at::Tensor& mu, const std::optional<int64_t>& num_samples) {
  std::vector<int64_t> shape;
  if (num_samples) shape.push_back(*num_samples);
  for (int64_t s : mu.sizes()) shape.push_back(s);
  return shape;
}

std::tuple<at::Tensor, at::Tensor> reparameterize_cpu(const at::Tensor& mu_in, const at::Tensor& logvar_in,
                                                       std::optional<int64_t> num_samples,
                                                       std::optional<at::Generator> generator) {
  TORCH_CHECK(mu_in.sizes() == logvar_in.sizes() && mu_in.scalar_type() == logvar_in.scalar_type(),
              "fastgen.reparameterize: mu and logvar must share shape and dtype");
  const int64_t samples = sample_count(num_samples);
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  at::Tensor z = at::empty(samples_shape(mu, num_samples), mu.options());
  const PhiloxState state = next_cpu_philox_state(generator);
  const int64_t n = mu.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparameterize_cpu", [&] {
    sample_all(state, samples, n, mu.const_data_ptr<scalar_t>(), logvar.const_data_ptr<scalar_t>(),
               z.data_ptr<scalar_t>());
  });
  return {z, philox_state_tensor(state)};
}

at::Tensor reparameterize_backward_cpu(const at::Tensor& grad_z_in, const at::Tensor& logvar_in,
                                       const at::Tensor& rng_state, std::optional<int64_t> num_samples) {
  const int64_t samples = sample_count(num_samples);
  const at::Tensor logvar = logvar_in.contiguous();
  const at::Tensor grad_z = grad_z_in.to(logvar.scalar_type()).contiguous();
  TORCH_CHECK(grad_z.numel() == samples * logvar.numel(),
              "fastgen.reparameterize_backward: grad_z has ", grad_z.numel(), " elements, expected ",
              samples * logvar.numel());
  const PhiloxState state = philox_state_from_tensor(rng_state);
  at::Tensor grad_logvar = at::empty_like(logvar);
  const int64_t n = logvar.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logvar.scalar_type(), "reparameterize_backward_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    const scalar_t* logvar_ptr = logvar.const_data_ptr<scalar_t>();
    const scalar_t* grad_ptr = grad_z.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = grad_logvar.data_ptr<scalar_t>();
    for_each_flat_block(n, [&](int64_t j0, int64_t len) {
      alignas(64) opmath logvar_buf[kBlock], grad_buf[kBlock], eps[kBlock], sum_buf[kBlock], out_buf[kBlock];
      for_each_vector<opmath>(len, [&](int64_t i) { Vec<opmath>(opmath(0)).store(sum_buf + i); });
      for (int64_t k = 0; k < samples; ++k) {
        normal_block_as(state, k * n + j0, len, eps);
        const opmath* g = load_block(grad_ptr + k * n + j0, len, grad_buf);
        for_each_vector<opmath>(len, [&](int64_t i) {
          (Vec<opmath>::loadu(sum_buf + i) + Vec<opmath>::loadu(g + i) * Vec<opmath>::loadu(eps + i))
              .store(sum_buf + i);
        });
      }
      const opmath* lv = load_block(logvar_ptr + j0, len, logvar_buf);
      scalar_t* dst = out_ptr + j0;
      opmath* out = output_block(dst, len, out_buf);
      for_each_vector<opmath>(len, [&](int64_t i) {
        reparameterize_grad_logvar(Vec<opmath>::loadu(lv + i), Vec<opmath>::loadu(sum_buf + i)).store(out + i);
      });
      store_block(dst, out, len);
    });
  });
  return grad_logvar;
}

at::Tensor& philox_normal_cpu(at::Tensor& out, int64_t seed, int64_t offset) {
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous(),
              "fastgen.philox_normal_: out must be a contiguous float32 tensor");
  const PhiloxState state{static_cast<uint64_t>(seed), static_cast<uint64_t>(offset)};
  float* out_ptr = out.data_ptr<float>();
  for_each_flat_block(out.numel(), [&](int64_t j0, int64_t len) {
    normal_block(state, j0, len, out_ptr + j0);
  });
  return out;
}

at::Tensor philox_state_cpu(const at::Tensor&, std::optional<at::Generator> generator, int64_t) {
  return philox_state_tensor(next_cpu_philox_state(generator));
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("philox_state", &philox_state_cpu);
  m.impl("_reparameterize", &reparameterize_cpu);
  m.impl("_reparameterize_backward", &reparameterize_backward_cpu);
  m.impl("philox_normal_", &philox_normal_cpu);
}

}  // namespace fastgen::cpu
