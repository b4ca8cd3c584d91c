// CPU kernels of reparameterize_log_weights: in one pass over mu and logvar,
// the samples of reparameterize (same stream, same z) and, per sample and row,
// log p(z) - log q(z|x); backward regenerates eps and recomputes z.
#include <torch/library.h>

#include "kernel_utils.h"
#include "row_shape.h"

namespace fastgen::cpu {
namespace {

constexpr const char* kOp = "reparameterize_log_weights";

// e^-prior_logvar in the compute type when the prior log-variance repeats over
// rows (a learned (D,) prior): computed once per call instead of once per
// element of every sample. Undefined otherwise.
template <typename opmath>
at::Tensor inverse_prior_variance(const at::Tensor& prior_logvar, int64_t numel) {
  if (!prior_logvar.defined() || prior_logvar.numel() >= numel) return at::Tensor();
  return prior_logvar.to(c10::CppTypeToScalarType<opmath>::value).neg().exp();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> reparameterize_log_weights_cpu(
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const std::optional<at::Tensor>& prior_mu_opt,
    const std::optional<at::Tensor>& prior_logvar_opt, std::optional<int64_t> num_samples, int64_t event_dims,
    std::optional<at::Generator> generator) {
  TORCH_CHECK(!num_samples || *num_samples >= 1, "fastgen.", kOp, ": num_samples must be >= 1");
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const at::Tensor prior_mu = prior_mu_opt.value_or(at::Tensor());
  const at::Tensor prior_logvar = prior_logvar_opt.value_or(at::Tensor());
  const RowShape shape = sample_row_shape(mu, logvar, prior_mu, prior_logvar, event_dims, kOp);
  const int64_t samples = num_samples.value_or(1);
  std::vector<int64_t> z_shape;
  if (num_samples) z_shape.push_back(samples);
  for (int64_t s : mu.sizes()) z_shape.push_back(s);
  at::Tensor z = at::empty(z_shape, mu.options());
  at::Tensor log_weights = at::empty({samples * shape.rows}, mu.options().dtype(row_sum_dtype(mu.scalar_type())));
  const PhiloxState state = next_cpu_philox_state(generator);
  const int64_t n = mu.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparameterize_log_weights_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    // Sample k's row r is row k * rows + r of the (samples * rows) x cols sums,
    // and elements [first, first + n) of a block are those of z and of the
    // stream: mu and logvar (period n) and the prior repeat over the samples.
    const RowOperand<scalar_t> m(mu), lv(logvar), pm(prior_mu), plv(prior_logvar);
    const at::Tensor inv_prior_var = inverse_prior_variance<opmath>(prior_logvar, n);
    const RowOperand<opmath> inv_var(inv_prior_var);
    scalar_t* z_ptr = z.data_ptr<scalar_t>();
    const int64_t cols = shape.cols;
    row_sums<opmath>(samples * shape.rows, cols, log_weights.data_ptr<opmath>(), [&](const RowBlock& block,
                                                                                      auto&& emit) {
      alignas(64) opmath m_buf[kBlock], lv_buf[kBlock], pm_buf[kBlock], plv_buf[kBlock], inv_buf[kBlock];
      alignas(64) opmath eps[kBlock], z_buf[kBlock];
      const int64_t first = block.first(cols);
      const opmath* mv = m.load(block, cols, m_buf);
      const opmath* lvv = lv.load(block, cols, lv_buf);
      normal_block_as(state, first, block.n, eps);
      opmath* zv = output_block(z_ptr + first, block.n, z_buf);
      if (!pm.defined() && !plv.defined()) {
        for_each_vector<opmath>(block.n, [&](int64_t i) {
          const Vec<opmath> e = Vec<opmath>::loadu(eps + i), log_var = Vec<opmath>::loadu(lvv + i);
          const Vec<opmath> sample = reparameterize_sample(Vec<opmath>::loadu(mv + i), log_var, e);
          sample.store(zv + i);
          emit(i, log_weight_std_normal(sample, log_var, e));
        });
      } else {
        // A missing half of the prior is its N(0, 1) value: mean 0 or log-variance 0.
        const opmath* pmv = pm.defined() ? pm.load(block, cols, pm_buf) : nullptr;
        const opmath* plvv = plv.defined() ? plv.load(block, cols, plv_buf) : nullptr;
        const opmath* invv = inv_var.defined() ? inv_var.load(block, cols, inv_buf) : nullptr;
        for_each_vector<opmath>(block.n, [&](int64_t i) {
          const Vec<opmath> e = Vec<opmath>::loadu(eps + i), log_var = Vec<opmath>::loadu(lvv + i);
          const Vec<opmath> prior_mean = pmv ? Vec<opmath>::loadu(pmv + i) : Vec<opmath>(opmath(0));
          const Vec<opmath> prior_lv = plvv ? Vec<opmath>::loadu(plvv + i) : Vec<opmath>(opmath(0));
          const Vec<opmath> inv = invv ? Vec<opmath>::loadu(invv + i) : exp_(Vec<opmath>(opmath(0)) - prior_lv);
          const Vec<opmath> sample = reparameterize_sample(Vec<opmath>::loadu(mv + i), log_var, e);
          sample.store(zv + i);
          emit(i, log_weight_diag_normal(sample, log_var, e, prior_mean, prior_lv, inv));
        });
      }
      store_block(z_ptr + first, zv, block.n);
    });
  });
  return {z, log_weights, philox_state_tensor(state)};
}

// Gradients: log_weight_grad_z and the sums over samples of fastgen/math.h.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> reparameterize_log_weights_backward_cpu(
    const std::optional<at::Tensor>& grad_z_opt, const std::optional<at::Tensor>& grad_w_opt,
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const std::optional<at::Tensor>& prior_mu_opt,
    const std::optional<at::Tensor>& prior_logvar_opt, const at::Tensor& rng_state,
    std::optional<int64_t> num_samples, int64_t event_dims, bool prior_mu_grad, bool prior_logvar_grad) {
  const char* op = "reparameterize_log_weights_backward";
  TORCH_CHECK(!num_samples || *num_samples >= 1, "fastgen.", op, ": num_samples must be >= 1");
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor logvar = logvar_in.contiguous();
  const at::Tensor prior_mu = prior_mu_opt.value_or(at::Tensor());
  const at::Tensor prior_logvar = prior_logvar_opt.value_or(at::Tensor());
  const RowShape shape = sample_row_shape(mu, logvar, prior_mu, prior_logvar, event_dims, op);
  const int64_t samples = num_samples.value_or(1);
  const int64_t n = mu.numel();
  at::Tensor grad_z, grad_w;
  if (grad_z_opt && grad_z_opt->defined()) {
    grad_z = grad_z_opt->to(mu.scalar_type()).contiguous();
    TORCH_CHECK(grad_z.numel() == samples * n, "fastgen.", op, ": grad_z has ", grad_z.numel(),
                " elements, expected ", samples * n);
  }
  if (grad_w_opt && grad_w_opt->defined()) {
    grad_w = grad_w_opt->to(row_sum_dtype(mu.scalar_type())).contiguous();
    TORCH_CHECK(grad_w.numel() == samples * shape.rows, "fastgen.", op, ": grad_log_weights has ", grad_w.numel(),
                " elements, expected ", samples * shape.rows);
  }
  const PhiloxState state = philox_state_from_tensor(rng_state);
  at::Tensor grad_mu = at::empty_like(mu);
  at::Tensor grad_logvar = at::empty_like(logvar);
  at::Tensor grad_prior_mu = at::empty({prior_mu_grad ? n : 0}, mu.options());
  at::Tensor grad_prior_logvar = at::empty({prior_logvar_grad ? n : 0}, mu.options());
  const bool prior = prior_mu.defined() || prior_logvar.defined();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparameterize_log_weights_backward_cpu",
                                  [&] {
    using opmath = opmath_t<scalar_t>;
    using V = Vec<opmath>;
    const RowOperand<scalar_t> m(mu), lv(logvar), pm(prior_mu), plv(prior_logvar);
    const at::Tensor inv_prior_var = inverse_prior_variance<opmath>(prior_logvar, n);
    const RowOperand<opmath> inv_var(inv_prior_var);
    const scalar_t* gz_ptr = grad_z.defined() ? grad_z.const_data_ptr<scalar_t>() : nullptr;
    const opmath* gw_ptr = grad_w.defined() ? grad_w.const_data_ptr<opmath>() : nullptr;
    scalar_t* gm_ptr = grad_mu.data_ptr<scalar_t>();
    scalar_t* glv_ptr = grad_logvar.data_ptr<scalar_t>();
    scalar_t* gpm_ptr = prior_mu_grad ? grad_prior_mu.data_ptr<scalar_t>() : nullptr;
    scalar_t* gplv_ptr = prior_logvar_grad ? grad_prior_logvar.data_ptr<scalar_t>() : nullptr;
    const int64_t cols = shape.cols, rows = shape.rows;
    for_each_block(rows, cols, [&](const RowBlock& block) {
      alignas(64) opmath m_buf[kBlock], lv_buf[kBlock], pm_buf[kBlock], plv_buf[kBlock], inv_buf[kBlock];
      alignas(64) opmath eps[kBlock], gz_buf[kBlock], gw_buf[kBlock];
      // Sums over the samples: of a_k, a_k eps_k, g_w, g_w s_k and the prior log-variance's terms.
      alignas(64) opmath sum_a[kBlock], sum_a_eps[kBlock], sum_gw[kBlock], sum_gw_s[kBlock], sum_plv[kBlock];
      const int64_t first = block.first(cols), len = block.n;
      const opmath* mv = m.load(block, cols, m_buf);
      const opmath* lvv = lv.load(block, cols, lv_buf);
      const opmath* pmv = pm.defined() ? pm.load(block, cols, pm_buf) : nullptr;
      const opmath* plvv = plv.defined() ? plv.load(block, cols, plv_buf) : nullptr;
      const opmath* invv = inv_var.defined() ? inv_var.load(block, cols, inv_buf) : nullptr;
      for (opmath* sum : {sum_a, sum_a_eps, sum_gw, sum_gw_s, sum_plv}) std::fill(sum, sum + vec_padded<opmath>(len), opmath(0));
      std::fill(gz_buf, gz_buf + vec_padded<opmath>(len), opmath(0));
      std::fill(gw_buf, gw_buf + vec_padded<opmath>(len), opmath(0));
      const opmath* gz = gz_buf;
      const opmath* gw = gw_buf;
      for (int64_t k = 0; k < samples; ++k) {
        normal_block_as(state, k * n + first, len, eps);
        if (gz_ptr) gz = load_block(gz_ptr + k * n + first, len, gz_buf);
        if (gw_ptr) gw = per_row_values(gw_ptr + k * rows, block, cols, gw_buf);
        for_each_vector<opmath>(len, [&](int64_t i) {
          const V e = V::loadu(eps + i), g_w = V::loadu(gw + i);
          const V sample = reparameterize_sample(V::loadu(mv + i), V::loadu(lvv + i), e);
          V score = sample, diff = sample;
          if (prior) {
            const V prior_mean = pmv ? V::loadu(pmv + i) : V(opmath(0));
            const V inv = invv ? V::loadu(invv + i) : (plvv ? exp_(V(opmath(0)) - V::loadu(plvv + i)) : V(opmath(1)));
            diff = sample - prior_mean;
            score = log_weight_score(sample, prior_mean, inv);
          }
          const V a = log_weight_grad_z(V::loadu(gz + i), g_w, score);
          (V::loadu(sum_a + i) + a).store(sum_a + i);
          (V::loadu(sum_a_eps + i) + a * e).store(sum_a_eps + i);
          (V::loadu(sum_gw + i) + g_w).store(sum_gw + i);
          if (gpm_ptr) (V::loadu(sum_gw_s + i) + g_w * score).store(sum_gw_s + i);
          if (gplv_ptr) (V::loadu(sum_plv + i) + log_weight_grad_prior_logvar(g_w, score, diff)).store(sum_plv + i);
        });
      }
      // grad_mu is sum_a itself; grad_logvar is formed in place of sum_a_eps.
      for_each_vector<opmath>(len, [&](int64_t i) {
        log_weights_grad_logvar(V::loadu(lvv + i), V::loadu(sum_a_eps + i), V::loadu(sum_gw + i)).store(sum_a_eps + i);
      });
      store_block(gm_ptr + first, sum_a, len);
      store_block(glv_ptr + first, sum_a_eps, len);
      if (gpm_ptr) store_block(gpm_ptr + first, sum_gw_s, len);
      if (gplv_ptr) store_block(gplv_ptr + first, sum_plv, len);
    });
  });
  return {grad_mu, grad_logvar, grad_prior_mu, grad_prior_logvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("_reparameterize_log_weights", &reparameterize_log_weights_cpu);
  m.impl("_reparameterize_log_weights_backward", &reparameterize_log_weights_backward_cpu);
}

}  // namespace fastgen::cpu
