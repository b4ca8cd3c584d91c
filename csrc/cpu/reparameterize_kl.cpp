// CPU kernels of reparameterize_kl: in one pass over mu and logvar, the
// samples of reparameterize (same stream, same z) and the per-row KL to N(0, I).
#include <torch/library.h>

#include "kernel_utils.h"
#include "row_shape.h"

namespace fastgen::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> reparameterize_kl_cpu(
    const at::Tensor& mu_in, const at::Tensor& logvar_in, std::optional<int64_t> num_samples,
    int64_t event_dims, std::optional<at::Generator> generator) {
  TORCH_CHECK(mu_in.sizes() == logvar_in.sizes(), "fastgen.reparameterize_kl: mu and logvar must share a shape");
  TORCH_CHECK(!num_samples || *num_samples >= 1, "fastgen.reparameterize_kl: num_samples must be >= 1");
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const RowShape shape = row_shape(mu, {&logvar}, event_dims, "reparameterize_kl");
  const int64_t samples = num_samples.value_or(1);
  std::vector<int64_t> z_shape;
  if (num_samples) z_shape.push_back(samples);
  for (int64_t s : mu.sizes()) z_shape.push_back(s);
  at::Tensor z = at::empty(z_shape, mu.options());
  at::Tensor kl = at::empty({shape.rows}, mu.options().dtype(row_sum_dtype(mu.scalar_type())));
  const PhiloxState state = next_cpu_philox_state(generator);
  const int64_t n = mu.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparameterize_kl_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    const scalar_t* mu_ptr = mu.const_data_ptr<scalar_t>();
    const scalar_t* logvar_ptr = logvar.const_data_ptr<scalar_t>();
    scalar_t* z_ptr = z.data_ptr<scalar_t>();
    const int64_t cols = shape.cols;
    // Rows shorter than a block (VAE latents): noise in whole blocks across
    // rows, then the KL sums over the same (cached) mu and logvar; longer rows
    // take the sample and the KL of each block in one pass.
    const bool short_rows = cols < kBlock;
    if (short_rows) sample_all(state, samples, n, mu_ptr, logvar_ptr, z_ptr);
    const RowOperand<scalar_t> m(mu), lv(logvar);
    row_sums<opmath>(shape.rows, cols, kl.data_ptr<opmath>(), [&](const RowBlock& block, auto&& emit) {
      alignas(64) opmath mu_buf[kBlock], logvar_buf[kBlock];
      const opmath* mv = m.load(block, cols, mu_buf);
      const opmath* lvv = lv.load(block, cols, logvar_buf);
      for_each_vector<opmath>(block.n, [&](int64_t i) {
        emit(i, kl_std_normal(Vec<opmath>::loadu(mv + i), Vec<opmath>::loadu(lvv + i)));
      });
      if (!short_rows) sample_block(state, samples, n, block.first(cols), block.n, mv, lvv, z_ptr);
    });
  });
  return {z, kl, philox_state_tensor(state)};
}

// Gradients: reparameterize_kl_grad_mu / _grad_logvar of fastgen/math.h.
std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cpu(
    const std::optional<at::Tensor>& grad_z_opt, const std::optional<at::Tensor>& grad_kl_opt,
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const at::Tensor& rng_state,
    std::optional<int64_t> num_samples, int64_t event_dims) {
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const RowShape shape = row_shape(mu, {&logvar}, event_dims, "reparameterize_kl_backward");
  const int64_t samples = num_samples.value_or(1);
  const int64_t n = mu.numel();
  at::Tensor grad_z, grad_kl;
  if (grad_z_opt && grad_z_opt->defined()) {
    grad_z = grad_z_opt->to(mu.scalar_type()).contiguous();
    TORCH_CHECK(grad_z.numel() == samples * n, "fastgen.reparameterize_kl_backward: grad_z has ",
                grad_z.numel(), " elements, expected ", samples * n);
  }
  if (grad_kl_opt && grad_kl_opt->defined()) {
    grad_kl = grad_kl_opt->to(row_sum_dtype(mu.scalar_type())).contiguous();
    TORCH_CHECK(grad_kl.numel() == shape.rows, "fastgen.reparameterize_kl_backward: grad_kl has ",
                grad_kl.numel(), " elements, expected ", shape.rows);
  }
  const PhiloxState state = philox_state_from_tensor(rng_state);
  at::Tensor grad_mu = at::empty_like(mu);
  at::Tensor grad_logvar = at::empty_like(logvar);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparameterize_kl_backward_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    const scalar_t* mu_ptr = mu.const_data_ptr<scalar_t>();
    const scalar_t* logvar_ptr = logvar.const_data_ptr<scalar_t>();
    const scalar_t* gz_ptr = grad_z.defined() ? grad_z.const_data_ptr<scalar_t>() : nullptr;
    const opmath* gkl_ptr = grad_kl.defined() ? grad_kl.const_data_ptr<opmath>() : nullptr;
    scalar_t* gm_ptr = grad_mu.data_ptr<scalar_t>();
    scalar_t* glv_ptr = grad_logvar.data_ptr<scalar_t>();
    const int64_t cols = shape.cols;
    // Blocks as forward drew the noise: whole blocks across short rows.
    for_each_block(cols < kBlock ? 1 : shape.rows, cols < kBlock ? n : cols, [&](const RowBlock& flat) {
      alignas(64) opmath mu_buf[kBlock], logvar_buf[kBlock], g_buf[kBlock], eps[kBlock], g_kl_buf[kBlock];
      alignas(64) opmath sum_g[kBlock], sum_g_eps[kBlock], gm_buf[kBlock], glv_buf[kBlock];
      const int64_t j0 = flat.first(cols < kBlock ? n : cols), len = flat.n;
      for_each_vector<opmath>(len, [&](int64_t i) {
        Vec<opmath>(opmath(0)).store(sum_g + i);
        Vec<opmath>(opmath(0)).store(sum_g_eps + i);
      });
      for (int64_t k = 0; gz_ptr && k < samples; ++k) {
        normal_block_as(state, k * n + j0, len, eps);
        const opmath* g = load_block(gz_ptr + k * n + j0, len, g_buf);
        for_each_vector<opmath>(len, [&](int64_t i) {
          const Vec<opmath> gv = Vec<opmath>::loadu(g + i);
          (Vec<opmath>::loadu(sum_g + i) + gv).store(sum_g + i);
          (Vec<opmath>::loadu(sum_g_eps + i) + gv * Vec<opmath>::loadu(eps + i)).store(sum_g_eps + i);
        });
      }
      // g_kl of each element's row: the elements [j0, j0 + len) span rows
      // j0 / cols to (j0 + len - 1) / cols.
      const opmath* g_kl = g_kl_buf;
      if (gkl_ptr) {
        for (int64_t i = 0, r = j0 / cols, c = j0 % cols; i < len; ++i) {
          g_kl_buf[i] = gkl_ptr[r];
          if (++c == cols) c = 0, ++r;
        }
      } else {
        std::fill(g_kl_buf, g_kl_buf + len, opmath(0));
      }
      std::fill(g_kl_buf + len, g_kl_buf + vec_padded<opmath>(len), opmath(0));
      const opmath* m = load_block(mu_ptr + j0, len, mu_buf);
      const opmath* lv = load_block(logvar_ptr + j0, len, logvar_buf);
      opmath* gm = output_block(gm_ptr + j0, len, gm_buf);
      opmath* glv = output_block(glv_ptr + j0, len, glv_buf);
      for_each_vector<opmath>(len, [&](int64_t i) {
        const Vec<opmath> mv = Vec<opmath>::loadu(m + i), lvv = Vec<opmath>::loadu(lv + i);
        const Vec<opmath> gk = Vec<opmath>::loadu(g_kl + i);
        reparameterize_kl_grad_mu(mv, Vec<opmath>::loadu(sum_g + i), gk).store(gm + i);
        reparameterize_kl_grad_logvar(lvv, Vec<opmath>::loadu(sum_g_eps + i), gk).store(glv + i);
      });
      store_block(gm_ptr + j0, gm, len);
      store_block(glv_ptr + j0, glv, len);
    });
  });
  return {grad_mu, grad_logvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("_reparameterize_kl", &reparameterize_kl_cpu);
  m.impl("_reparameterize_kl_backward", &reparameterize_kl_backward_cpu);
}

}  // namespace fastgen::cpu
