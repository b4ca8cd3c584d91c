// CUDA kernels of bernoulli_log_likelihood: per-row sums of
// target * logits - softplus(logits), the target possibly broadcast, and the
// full-size gradients of backward.
#include "kernel_utils.cuh"

namespace fastgen::cuda {
namespace {

template <typename T>
struct BernoulliTerms : NoLaunchWork {
  using scalar_t = T;
  RowOperand<T> logits, target;

  struct Row {
    const T* logits;
    const T* target;
  };

  __device__ Row row(int64_t r, int64_t cols) const { return {logits.row(r, cols), target.row(r, cols)}; }

  template <int N, bool ALIGNED>
  __device__ void terms(const Row& row, int64_t col, int valid, acc_t<T> (&out)[N]) const {
    using Acc = acc_t<T>;
    Acc x[N], t[N];
    load<N, ALIGNED>(row.logits + col, valid, x);
    load<N, ALIGNED>(row.target + col, valid, t);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = bernoulli_log_prob(x[i], t[i]);
  }
};

template <typename T>
struct BernoulliBackward : NoLaunchWork {
  const acc_t<T>* grad;
  RowOperand<T> logits, target;
  T* grad_logits;
  T* grad_target;  // null: not wanted
  int64_t cols;  // columns of a row

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid, RowCursor at) const {
    using Acc = acc_t<T>;
    Acc g[N], x[N], t[N];
    row_values<N, ALIGNED>(grad, at, cols, valid, g);
    load_elements<N, ALIGNED>(logits, at, cols, valid, x);
    load_elements<N, ALIGNED>(target, at, cols, valid, t);
    Acc gx[N], gt[N];
#pragma unroll
    for (int i = 0; i < N; ++i) {
      gx[i] = g[i] * bernoulli_log_prob_grad_logits(x[i], t[i]);
      gt[i] = g[i] * x[i];
    }
    store<N, ALIGNED>(grad_logits + first, valid, gx);
    if (grad_target != nullptr) store<N, ALIGNED>(grad_target + first, valid, gt);
  }
};

}  // namespace

cudaError_t bernoulli_log_likelihood(const Launch& launch, Dtype dtype, Rows rows, Operand logits,
                                     Operand target, void* out, void* partials) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    BernoulliTerms<T> op;
    op.logits = RowOperand<T>(logits, rows.cols);
    op.target = RowOperand<T>(target, rows.cols);
    constexpr int N = kVec<T>;
    return row_sums<N>(launch, op, rows, aligned_groups<N>(logits) && aligned_groups<N>(target), out, partials);
  });
}

cudaError_t bernoulli_log_likelihood_backward(const Launch& launch, Dtype dtype, Rows rows, const void* grad,
                                              Operand logits, Operand target, void* grad_logits,
                                              void* grad_target) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    BernoulliBackward<T> op;
    op.grad = static_cast<const acc_t<T>*>(grad);
    op.logits = RowOperand<T>(logits, rows.cols);
    op.target = RowOperand<T>(target, rows.cols);
    op.grad_logits = static_cast<T*>(grad_logits);
    op.grad_target = static_cast<T*>(grad_target);
    op.cols = rows.cols;
    const bool aligned = rows.cols % kVec<T> == 0 && aligned16(logits) && aligned16(target) &&
                         aligned16(grad_logits) && (grad_target == nullptr || aligned16(grad_target));
    return for_each_row_group<kVec<T>>(launch, op, rows, aligned);
  });
}

}  // namespace fastgen::cuda
