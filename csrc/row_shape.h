// Torch-side glue shared by every backend's implementation of the row ops
// (KL and log-likelihoods): the rows x cols view of the operands and the
// checks that the registry's shape contract holds.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>

namespace fastgen {

struct RowShape {
  int64_t rows;
  int64_t cols;
};

// cols = product of the last event_dims dims of `first`; rows * cols = the
// largest operand's numel. Every operand must be contiguous, of first's dtype
// and device, with a numel that is a multiple of cols and divides rows * cols.
inline RowShape row_shape(const at::Tensor& first, std::initializer_list<const at::Tensor*> others,
                          int64_t event_dims, const char* op) {
  TORCH_CHECK(event_dims >= 0 && event_dims <= first.dim(), "fastgen.", op,
              ": event_dims must be in [0, ", first.dim(), "], got ", event_dims);
  int64_t cols = 1;
  for (int64_t d = first.dim() - event_dims; d < first.dim(); ++d) cols *= first.size(d);
  int64_t total = first.numel();
  for (const at::Tensor* t : others) {
    if (t->defined()) total = std::max(total, t->numel());
  }
  auto check = [&](const at::Tensor& t) {
    if (!t.defined()) return;
    TORCH_CHECK(t.is_contiguous(), "fastgen.", op, ": operands must be contiguous");
    TORCH_CHECK(t.scalar_type() == first.scalar_type(), "fastgen.", op,
                ": operands must share one dtype, got ", first.scalar_type(), " and ", t.scalar_type());
    TORCH_CHECK(t.device() == first.device(), "fastgen.", op, ": operands must share one device, got ",
                first.device(), " and ", t.device());
    if (cols > 0 && total > 0) {
      TORCH_CHECK(t.numel() % cols == 0 && total % t.numel() == 0, "fastgen.", op, ": an operand of ",
                  t.numel(), " elements does not repeat evenly over ", total, " elements in rows of ",
                  cols);
    }
  };
  check(first);
  for (const at::Tensor* t : others) check(*t);
  if (cols == 0) {
    // No columns: one zero sum per batch element of `first`.
    int64_t rows = 1;
    for (int64_t d = 0; d < first.dim() - event_dims; ++d) rows *= first.size(d);
    return {rows, 0};
  }
  return {total / cols, cols};
}

// The rows of an op that samples from N(mu, e^logvar) and sums over rows
// against a prior: mu and logvar share a shape, and the prior repeats over
// mu's rows (it has no more elements than mu).
inline RowShape sample_row_shape(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& prior_mu,
                                 const at::Tensor& prior_logvar, int64_t event_dims, const char* op) {
  TORCH_CHECK(mu.sizes() == logvar.sizes(), "fastgen.", op, ": mu and logvar must share a shape");
  const RowShape shape = row_shape(mu, {&logvar, &prior_mu, &prior_logvar}, event_dims, op);
  TORCH_CHECK(shape.cols == 0 || shape.rows * shape.cols == mu.numel(), "fastgen.", op,
              ": the prior must not have more elements than mu");
  return shape;
}

// The dtype of the per-row sums: float32 for half types, else the input's.
inline at::ScalarType row_sum_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

// A row op's upstream gradient: one per row, contiguous, in the dtype of the
// per-row sums (autograd may hand it expanded or in another dtype).
inline at::Tensor row_grad(const at::Tensor& grad, at::ScalarType input, int64_t rows, const char* op) {
  TORCH_CHECK(grad.numel() == rows, "fastgen.", op, ": grad has ", grad.numel(), " elements, expected ", rows);
  return grad.to(row_sum_dtype(input)).contiguous();
}

}  // namespace fastgen
