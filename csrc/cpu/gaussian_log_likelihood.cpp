// CPU kernels of gaussian_log_likelihood: per-row sums of the diagonal
// Gaussian log-density of x under (mean, e^logvar), unit variance without
// logvar; any operand may broadcast over rows.
#include <torch/library.h>

#include "kernel_utils.h"
#include "row_shape.h"

namespace fastgen::cpu {
namespace {

at::Tensor gaussian_log_likelihood_cpu(const at::Tensor& x, const at::Tensor& mean,
                                       const std::optional<at::Tensor>& logvar_opt, int64_t event_dims) {
  const at::Tensor logvar = logvar_opt.value_or(at::Tensor());
  const RowShape shape = row_shape(x, {&mean, &logvar}, event_dims, "gaussian_log_likelihood");
  at::Tensor out = at::empty({shape.rows}, x.options().dtype(row_sum_dtype(x.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gaussian_log_likelihood_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    const RowOperand<scalar_t> xo(x), mo(mean), lvo(logvar);
    const int64_t cols = shape.cols;
    row_sums<opmath>(shape.rows, cols, out.data_ptr<opmath>(), [&](const RowBlock& block, auto&& emit) {
      alignas(64) opmath x_buf[kBlock], m_buf[kBlock], lv_buf[kBlock];
      const opmath* xv = xo.load(block, cols, x_buf);
      const opmath* mv = mo.load(block, cols, m_buf);
      if (!lvo.defined()) {
        for_each_vector<opmath>(block.n, [&](int64_t i) {
          emit(i, gaussian_log_prob_unit(Vec<opmath>::loadu(xv + i), Vec<opmath>::loadu(mv + i)));
        });
        return;
      }
      const opmath* lvv = lvo.load(block, cols, lv_buf);
      for_each_vector<opmath>(block.n, [&](int64_t i) {
        emit(i, gaussian_log_prob(Vec<opmath>::loadu(xv + i), Vec<opmath>::loadu(mv + i), Vec<opmath>::loadu(lvv + i)));
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gaussian_log_likelihood_backward_cpu(const at::Tensor& grad_in,
                                                                         const at::Tensor& x,
                                                                         const at::Tensor& mean,
                                                                         const std::optional<at::Tensor>& logvar_opt,
                                                                         int64_t event_dims) {
  const at::Tensor logvar = logvar_opt.value_or(at::Tensor());
  const RowShape shape = row_shape(x, {&mean, &logvar}, event_dims, "gaussian_log_likelihood_backward");
  const at::Tensor grad = row_grad(grad_in, x.scalar_type(), shape.rows, "gaussian_log_likelihood_backward");
  const int64_t total = shape.rows * shape.cols;
  at::Tensor grad_x = at::empty({total}, x.options());
  at::Tensor grad_logvar = at::empty({logvar.defined() ? total : 0}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gaussian_log_likelihood_backward_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    const RowOperand<scalar_t> xo(x), mo(mean), lvo(logvar);
    const opmath* g_ptr = grad.const_data_ptr<opmath>();
    scalar_t* gx_ptr = grad_x.data_ptr<scalar_t>();
    scalar_t* glv_ptr = logvar.defined() ? grad_logvar.data_ptr<scalar_t>() : nullptr;
    const int64_t cols = shape.cols;
    for_each_block(shape.rows, cols, [&](const RowBlock& block) {
      alignas(64) opmath x_buf[kBlock], m_buf[kBlock], lv_buf[kBlock], g_buf[kBlock], gx_buf[kBlock], glv_buf[kBlock];
      const int64_t n = block.n, first = block.first(cols);
      const opmath* xv = xo.load(block, cols, x_buf);
      const opmath* mv = mo.load(block, cols, m_buf);
      const opmath* gv = per_row_values(g_ptr, block, cols, g_buf);
      opmath* gx = output_block(gx_ptr + first, n, gx_buf);
      if (!glv_ptr) {
        for_each_vector<opmath>(n, [&](int64_t i) {
          (Vec<opmath>::loadu(gv + i) * gaussian_log_prob_unit_grad_x(Vec<opmath>::loadu(xv + i), Vec<opmath>::loadu(mv + i)))
              .store(gx + i);
        });
        store_block(gx_ptr + first, gx, n);
        return;
      }
      const opmath* lvv = lvo.load(block, cols, lv_buf);
      opmath* glv = output_block(glv_ptr + first, n, glv_buf);
      for_each_vector<opmath>(n, [&](int64_t i) {
        const GaussianLogProbGrads<Vec<opmath>> d = gaussian_log_prob_grads(
            Vec<opmath>::loadu(xv + i), Vec<opmath>::loadu(mv + i), Vec<opmath>::loadu(lvv + i));
        const Vec<opmath> g = Vec<opmath>::loadu(gv + i);
        (g * d.x).store(gx + i);
        (g * d.logvar).store(glv + i);
      });
      store_block(gx_ptr + first, gx, n);
      store_block(glv_ptr + first, glv, n);
    });
  });
  return {grad_x, grad_logvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("_gaussian_log_likelihood", &gaussian_log_likelihood_cpu);
  m.impl("_gaussian_log_likelihood_backward", &gaussian_log_likelihood_backward_cpu);
}

}  // namespace fastgen::cpu
