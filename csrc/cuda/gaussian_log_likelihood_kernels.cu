// CUDA kernels of gaussian_log_likelihood: per-row sums of the diagonal
// Gaussian log-density of x under (mean, e^logvar), unit variance without
// logvar, any operand broadcast over rows; and the full-size gradients.
#include "kernel_utils.cuh"

namespace fastgen::cuda {
namespace {

template <typename T>
struct GaussianLogProbTerms : NoLaunchWork {
  using scalar_t = T;
  RowOperand<T> x, mean, logvar;

  struct Row {
    const T* x;
    const T* mean;
    const T* logvar;  // null: unit variance
  };

  __device__ Row row(int64_t r, int64_t cols) const {
    return {x.row(r, cols), mean.row(r, cols), logvar.defined() ? logvar.row(r, cols) : nullptr};
  }

  template <int N, bool ALIGNED>
  __device__ void terms(const Row& row, int64_t col, int valid, acc_t<T> (&out)[N]) const {
    using Acc = acc_t<T>;
    Acc xv[N], mv[N];
    load<N, ALIGNED>(row.x + col, valid, xv);
    load<N, ALIGNED>(row.mean + col, valid, mv);
    if (row.logvar == nullptr) {
#pragma unroll
      for (int i = 0; i < N; ++i) out[i] = gaussian_log_prob_unit(xv[i], mv[i]);
      return;
    }
    Acc lv[N];
    load<N, ALIGNED>(row.logvar + col, valid, lv);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = gaussian_log_prob(xv[i], mv[i], lv[i]);
  }
};

template <typename T>
struct GaussianLogProbBackward : NoLaunchWork {
  const acc_t<T>* grad;
  RowOperand<T> x, mean, logvar;
  T* grad_x;
  T* grad_logvar;  // null exactly when logvar is absent
  int64_t cols;  // columns of a row

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid, RowCursor at) const {
    using Acc = acc_t<T>;
    Acc g[N], xv[N], mv[N], gx[N];
    row_values<N, ALIGNED>(grad, at, cols, valid, g);
    load_elements<N, ALIGNED>(x, at, cols, valid, xv);
    load_elements<N, ALIGNED>(mean, at, cols, valid, mv);
    if (!logvar.defined()) {
#pragma unroll
      for (int i = 0; i < N; ++i) gx[i] = g[i] * gaussian_log_prob_unit_grad_x(xv[i], mv[i]);
      store<N, ALIGNED>(grad_x + first, valid, gx);
      return;
    }
    Acc lv[N], glv[N];
    load_elements<N, ALIGNED>(logvar, at, cols, valid, lv);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const GaussianLogProbGrads<Acc> d = gaussian_log_prob_grads(xv[i], mv[i], lv[i]);
      gx[i] = g[i] * d.x;
      glv[i] = g[i] * d.logvar;
    }
    store<N, ALIGNED>(grad_x + first, valid, gx);
    store<N, ALIGNED>(grad_logvar + first, valid, glv);
  }
};

}  // namespace

cudaError_t gaussian_log_likelihood(const Launch& launch, Dtype dtype, Rows rows, Operand x, Operand mean,
                                    Operand logvar, void* out, void* partials) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    GaussianLogProbTerms<T> op;
    op.x = RowOperand<T>(x, rows.cols);
    op.mean = RowOperand<T>(mean, rows.cols);
    op.logvar = RowOperand<T>(logvar, rows.cols);
    constexpr int N = kVec<T>;
    const bool aligned = aligned_groups<N>(x) && aligned_groups<N>(mean) && aligned_groups<N>(logvar);
    return row_sums<N>(launch, op, rows, aligned, out, partials);
  });
}

cudaError_t gaussian_log_likelihood_backward(const Launch& launch, Dtype dtype, Rows rows, const void* grad,
                                             Operand x, Operand mean, Operand logvar, void* grad_x,
                                             void* grad_logvar) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    GaussianLogProbBackward<T> op;
    op.grad = static_cast<const acc_t<T>*>(grad);
    op.x = RowOperand<T>(x, rows.cols);
    op.mean = RowOperand<T>(mean, rows.cols);
    op.logvar = RowOperand<T>(logvar, rows.cols);
    op.grad_x = static_cast<T*>(grad_x);
    op.grad_logvar = static_cast<T*>(grad_logvar);
    op.cols = rows.cols;
    const bool aligned = rows.cols % kVec<T> == 0 && aligned16(x) && aligned16(mean) && aligned16(logvar) &&
                         aligned16(grad_x) && (grad_logvar == nullptr || aligned16(grad_logvar));
    return for_each_row_group<kVec<T>>(launch, op, rows, aligned);
  });
}

}  // namespace fastgen::cuda
