// CUDA ops bernoulli_log_likelihood(+_backward): checks, outputs and the
// per-row workspace; the kernels are in bernoulli_log_likelihood_kernels.cu.
#include <torch/library.h>

#include "glue.h"
#include "row_shape.h"

namespace fastgen::cuda {
namespace {

at::Tensor bernoulli_log_likelihood_cuda(const at::Tensor& logits, const at::Tensor& target, int64_t event_dims) {
  const char* op = "bernoulli_log_likelihood";
  const RowShape shape = row_shape(logits, {&target}, event_dims, op);
  const c10::cuda::CUDAGuard guard(logits.device());
  at::Tensor out = at::empty({shape.rows}, logits.options().dtype(row_sum_dtype(logits.scalar_type())));
  const Rows rows{shape.rows, shape.cols};
  at::Tensor partials = row_sum_workspace(rows, out);
  check_launch(bernoulli_log_likelihood(current_launch(), dtype_of(logits, op), rows, operand_of(logits),
                                        operand_of(target), out.data_ptr(), partials.data_ptr()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> bernoulli_log_likelihood_backward_cuda(const at::Tensor& grad_in,
                                                                           const at::Tensor& logits,
                                                                           const at::Tensor& target,
                                                                           int64_t event_dims, bool target_grad) {
  const char* op = "bernoulli_log_likelihood_backward";
  const RowShape shape = row_shape(logits, {&target}, event_dims, op);
  check_on_device(grad_in, logits, op, "grad");
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor grad = row_grad(grad_in, logits.scalar_type(), shape.rows, "bernoulli_log_likelihood_backward");
  const int64_t total = shape.rows * shape.cols;
  at::Tensor grad_logits = at::empty({total}, logits.options());
  at::Tensor grad_target = at::empty({target_grad ? total : 0}, logits.options());
  check_launch(bernoulli_log_likelihood_backward(current_launch(), dtype_of(logits, op),
                                                 Rows{shape.rows, shape.cols}, grad.const_data_ptr(),
                                                 operand_of(logits), operand_of(target), grad_logits.data_ptr(),
                                                 data_or_null(grad_target, target_grad)));
  return {grad_logits, grad_target};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("_bernoulli_log_likelihood", &bernoulli_log_likelihood_cuda);
  m.impl("_bernoulli_log_likelihood_backward", &bernoulli_log_likelihood_backward_cuda);
}

}  // namespace fastgen::cuda
