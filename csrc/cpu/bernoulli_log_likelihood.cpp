// CPU kernels of bernoulli_log_likelihood: per-row sums of
// target * logits - softplus(logits), the target possibly broadcast.
#include <torch/library.h>

#include "kernel_utils.h"
#include "row_shape.h"

namespace fastgen::cpu {
namespace {

at::Tensor bernoulli_log_likelihood_cpu(const at::Tensor& logits, const at::Tensor& target, int64_t event_dims) {
  const RowShape shape = row_shape(logits, {&target}, event_dims, "bernoulli_log_likelihood");
  at::Tensor out = at::empty({shape.rows}, logits.options().dtype(row_sum_dtype(logits.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bernoulli_log_likelihood_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    const RowOperand<scalar_t> x(logits), t(target);
    const int64_t cols = shape.cols;
    row_sums<opmath>(shape.rows, cols, out.data_ptr<opmath>(), [&](const RowBlock& block, auto&& emit) {
      alignas(64) opmath x_buf[kBlock], t_buf[kBlock];
      const opmath* xv = x.load(block, cols, x_buf);
      const opmath* tv = t.load(block, cols, t_buf);
      for_each_vector<opmath>(block.n, [&](int64_t i) {
        emit(i, bernoulli_log_prob(Vec<opmath>::loadu(xv + i), Vec<opmath>::loadu(tv + i)));
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> bernoulli_log_likelihood_backward_cpu(const at::Tensor& grad_in,
                                                                          const at::Tensor& logits,
                                                                          const at::Tensor& target,
                                                                          int64_t event_dims, bool target_grad) {
  const RowShape shape = row_shape(logits, {&target}, event_dims, "bernoulli_log_likelihood_backward");
  const at::Tensor grad = row_grad(grad_in, logits.scalar_type(), shape.rows, "bernoulli_log_likelihood_backward");
  const int64_t total = shape.rows * shape.cols;
  at::Tensor grad_logits = at::empty({total}, logits.options());
  at::Tensor grad_target = at::empty({target_grad ? total : 0}, logits.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bernoulli_log_likelihood_backward_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    const RowOperand<scalar_t> x(logits), t(target);
    const opmath* g_ptr = grad.const_data_ptr<opmath>();
    scalar_t* gx_ptr = grad_logits.data_ptr<scalar_t>();
    scalar_t* gt_ptr = target_grad ? grad_target.data_ptr<scalar_t>() : nullptr;
    const int64_t cols = shape.cols;
    for_each_block(shape.rows, cols, [&](const RowBlock& block) {
      alignas(64) opmath x_buf[kBlock], t_buf[kBlock], g_buf[kBlock], gx_buf[kBlock], gt_buf[kBlock];
      const int64_t n = block.n, first = block.first(cols);
      const opmath* xv = x.load(block, cols, x_buf);
      const opmath* tv = t.load(block, cols, t_buf);
      const opmath* gv = per_row_values(g_ptr, block, cols, g_buf);
      opmath* gx = output_block(gx_ptr + first, n, gx_buf);
      opmath* gt = gt_ptr ? output_block(gt_ptr + first, n, gt_buf) : nullptr;
      for_each_vector<opmath>(n, [&](int64_t i) {
        const Vec<opmath> xi = Vec<opmath>::loadu(xv + i), g = Vec<opmath>::loadu(gv + i);
        (g * bernoulli_log_prob_grad_logits(xi, Vec<opmath>::loadu(tv + i))).store(gx + i);
        if (gt) (g * xi).store(gt + i);
      });
      store_block(gx_ptr + first, gx, n);
      if (gt) store_block(gt_ptr + first, gt, n);
    });
  });
  return {grad_logits, grad_target};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("_bernoulli_log_likelihood", &bernoulli_log_likelihood_cpu);
  m.impl("_bernoulli_log_likelihood_backward", &bernoulli_log_likelihood_backward_cpu);
}

}  // namespace fastgen::cpu
