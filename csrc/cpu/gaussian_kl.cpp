// CPU kernels of gaussian_kl: per-row sums of KL(N(mu, e^logvar) || prior),
// the prior N(0, I) or a diagonal Gaussian that may broadcast over rows.
#include <torch/library.h>

#include "kernel_utils.h"
#include "row_shape.h"

namespace fastgen::cpu {
namespace {

at::Tensor gaussian_kl_cpu(const at::Tensor& mu, const at::Tensor& logvar,
                           const std::optional<at::Tensor>& prior_mu_opt,
                           const std::optional<at::Tensor>& prior_logvar_opt, int64_t event_dims) {
  const at::Tensor prior_mu = prior_mu_opt.value_or(at::Tensor());
  const at::Tensor prior_logvar = prior_logvar_opt.value_or(at::Tensor());
  const RowShape shape = row_shape(mu, {&logvar, &prior_mu, &prior_logvar}, event_dims, "gaussian_kl");
  at::Tensor out = at::empty({shape.rows}, mu.options().dtype(row_sum_dtype(mu.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "gaussian_kl_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    const RowOperand<scalar_t> m(mu), lv(logvar), pm(prior_mu), plv(prior_logvar);
    // A prior log-variance broadcast over rows (a learned (D,) prior) has its
    // e^-plv computed once here rather than once per row.
    at::Tensor inv_prior_var;
    if (plv.defined() && plv.period < shape.rows * shape.cols) {
      inv_prior_var = prior_logvar.to(c10::CppTypeToScalarType<opmath>::value).neg().exp();
    }
    const RowOperand<opmath> inv_var(inv_prior_var);
    const int64_t cols = shape.cols;
    row_sums<opmath>(shape.rows, cols, out.data_ptr<opmath>(), [&](const RowBlock& block, auto&& emit) {
      alignas(64) opmath m_buf[kBlock], lv_buf[kBlock], pm_buf[kBlock], plv_buf[kBlock], inv_buf[kBlock];
      const opmath* mv = m.load(block, cols, m_buf);
      const opmath* lvv = lv.load(block, cols, lv_buf);
      if (!pm.defined() && !plv.defined()) {
        for_each_vector<opmath>(block.n, [&](int64_t i) {
          emit(i, kl_std_normal(Vec<opmath>::loadu(mv + i), Vec<opmath>::loadu(lvv + i)));
        });
        return;
      }
      // A missing half of the prior is its N(0, 1) value: mean 0 or log-variance 0.
      const opmath* pmv = pm.defined() ? pm.load(block, cols, pm_buf) : nullptr;
      const opmath* plvv = plv.defined() ? plv.load(block, cols, plv_buf) : nullptr;
      const opmath* inv_varv = inv_var.defined() ? inv_var.load(block, cols, inv_buf) : nullptr;
      for_each_vector<opmath>(block.n, [&](int64_t i) {
        const Vec<opmath> prior_mean = pmv ? Vec<opmath>::loadu(pmv + i) : Vec<opmath>(opmath(0));
        const Vec<opmath> prior_lv = plvv ? Vec<opmath>::loadu(plvv + i) : Vec<opmath>(opmath(0));
        const Vec<opmath> mean = Vec<opmath>::loadu(mv + i), log_var = Vec<opmath>::loadu(lvv + i);
        emit(i, inv_varv ? kl_diag_normal(mean, log_var, prior_mean, prior_lv, Vec<opmath>::loadu(inv_varv + i))
                         : kl_diag_normal(mean, log_var, prior_mean, prior_lv));
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gaussian_kl_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& mu, const at::Tensor& logvar,
    const std::optional<at::Tensor>& prior_mu_opt, const std::optional<at::Tensor>& prior_logvar_opt,
    int64_t event_dims, bool prior_logvar_grad) {
  const at::Tensor prior_mu = prior_mu_opt.value_or(at::Tensor());
  const at::Tensor prior_logvar = prior_logvar_opt.value_or(at::Tensor());
  const RowShape shape = row_shape(mu, {&logvar, &prior_mu, &prior_logvar}, event_dims, "gaussian_kl_backward");
  const at::Tensor grad = row_grad(grad_in, mu.scalar_type(), shape.rows, "gaussian_kl_backward");
  // Gradients of broadcast operands come back at full size; the op layer sums them down.
  const int64_t total = shape.rows * shape.cols;
  at::Tensor grad_mu = at::empty({total}, mu.options());
  at::Tensor grad_logvar = at::empty({total}, mu.options());
  at::Tensor grad_prior_logvar = at::empty({prior_logvar_grad ? total : 0}, mu.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "gaussian_kl_backward_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    const RowOperand<scalar_t> m(mu), lv(logvar), pm(prior_mu), plv(prior_logvar);
    const opmath* g_ptr = grad.const_data_ptr<opmath>();
    scalar_t* gm_ptr = grad_mu.data_ptr<scalar_t>();
    scalar_t* glv_ptr = grad_logvar.data_ptr<scalar_t>();
    scalar_t* gplv_ptr = prior_logvar_grad ? grad_prior_logvar.data_ptr<scalar_t>() : nullptr;
    const int64_t cols = shape.cols;
    for_each_block(shape.rows, cols, [&](const RowBlock& block) {
      alignas(64) opmath m_buf[kBlock], lv_buf[kBlock], pm_buf[kBlock], plv_buf[kBlock], g_buf[kBlock];
      alignas(64) opmath gm_buf[kBlock], glv_buf[kBlock], gplv_buf[kBlock];
      const int64_t n = block.n, first = block.first(cols);
      const opmath* mv = m.load(block, cols, m_buf);
      const opmath* lvv = lv.load(block, cols, lv_buf);
      const opmath* pmv = pm.defined() ? pm.load(block, cols, pm_buf) : nullptr;
      const opmath* plvv = plv.defined() ? plv.load(block, cols, plv_buf) : nullptr;
      const opmath* gv = per_row_values(g_ptr, block, cols, g_buf);
      opmath* gm = output_block(gm_ptr + first, n, gm_buf);
      opmath* glv = output_block(glv_ptr + first, n, glv_buf);
      opmath* gplv = gplv_ptr ? output_block(gplv_ptr + first, n, gplv_buf) : nullptr;
      if (!pmv && !plvv) {
        for_each_vector<opmath>(n, [&](int64_t i) {
          const Vec<opmath> g = Vec<opmath>::loadu(gv + i);
          (g * Vec<opmath>::loadu(mv + i)).store(gm + i);
          (g * kl_std_normal_grad_logvar(Vec<opmath>::loadu(lvv + i))).store(glv + i);
        });
      } else {
      for_each_vector<opmath>(n, [&](int64_t i) {
        const Vec<opmath> prior_mean = pmv ? Vec<opmath>::loadu(pmv + i) : Vec<opmath>(opmath(0));
        const Vec<opmath> prior_lv = plvv ? Vec<opmath>::loadu(plvv + i) : Vec<opmath>(opmath(0));
        const KlDiagGrads<Vec<opmath>> d =
            kl_diag_normal_grads(Vec<opmath>::loadu(mv + i), Vec<opmath>::loadu(lvv + i), prior_mean, prior_lv);
        const Vec<opmath> g = Vec<opmath>::loadu(gv + i);
        (g * d.mu).store(gm + i);
        (g * d.logvar).store(glv + i);
        if (gplv) (g * d.prior_logvar).store(gplv + i);
      });
      }
      store_block(gm_ptr + first, gm, n);
      store_block(glv_ptr + first, glv, n);
      if (gplv) store_block(gplv_ptr + first, gplv, n);
    });
  });
  return {grad_mu, grad_logvar, grad_prior_logvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("_gaussian_kl", &gaussian_kl_cpu);
  m.impl("_gaussian_kl_backward", &gaussian_kl_backward_cpu);
}

}  // namespace fastgen::cpu
