// CUDA kernels of gaussian_kl: per-row sums of KL(N(mu, e^logvar) || prior),
// the prior N(0, I) or a diagonal Gaussian that may broadcast over rows, and
// the full-size gradients of backward.
#include "kernel_utils.cuh"

namespace fastgen::cuda {
namespace {

template <typename T>
struct GaussianKlTerms : NoLaunchWork {
  using scalar_t = T;
  RowOperand<T> mu, logvar, prior_mu, prior_logvar;

  struct Row {
    const T* mu;
    const T* logvar;
    const T* prior_mu;  // null: mean 0
    const T* prior_logvar;  // null: log-variance 0
  };

  __device__ Row row(int64_t r, int64_t cols) const {
    return {mu.row(r, cols), logvar.row(r, cols), prior_mu.defined() ? prior_mu.row(r, cols) : nullptr,
            prior_logvar.defined() ? prior_logvar.row(r, cols) : nullptr};
  }

  template <int N, bool ALIGNED>
  __device__ void terms(const Row& row, int64_t col, int valid, acc_t<T> (&out)[N]) const {
    using Acc = acc_t<T>;
    Acc m[N], lv[N];
    load<N, ALIGNED>(row.mu + col, valid, m);
    load<N, ALIGNED>(row.logvar + col, valid, lv);
    if (row.prior_mu == nullptr && row.prior_logvar == nullptr) {
#pragma unroll
      for (int i = 0; i < N; ++i) out[i] = kl_std_normal(m[i], lv[i]);
      return;
    }
    // A missing half of the prior is its N(0, 1) value: mean 0 or log-variance 0.
    Acc pm[N], plv[N];
    load_or_zeros<N, ALIGNED>(row.prior_mu ? row.prior_mu + col : nullptr, valid, pm);
    load_or_zeros<N, ALIGNED>(row.prior_logvar ? row.prior_logvar + col : nullptr, valid, plv);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = kl_diag_normal(m[i], lv[i], pm[i], plv[i]);
  }
};

template <typename T>
struct GaussianKlBackward : NoLaunchWork {
  const acc_t<T>* grad;
  RowOperand<T> mu, logvar, prior_mu, prior_logvar;
  T* grad_mu;
  T* grad_logvar;
  T* grad_prior_logvar;  // null: not wanted
  int64_t cols;  // columns of a row

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid, RowCursor at) const {
    using Acc = acc_t<T>;
    Acc g[N], m[N], lv[N], pm[N], plv[N];
    row_values<N, ALIGNED>(grad, at, cols, valid, g);
    load_elements<N, ALIGNED>(mu, at, cols, valid, m);
    load_elements<N, ALIGNED>(logvar, at, cols, valid, lv);
    load_elements<N, ALIGNED>(prior_mu, at, cols, valid, pm);
    load_elements<N, ALIGNED>(prior_logvar, at, cols, valid, plv);
    Acc gm[N], glv[N], gplv[N];
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const KlDiagGrads<Acc> d = kl_diag_normal_grads(m[i], lv[i], pm[i], plv[i]);
      gm[i] = g[i] * d.mu;
      glv[i] = g[i] * d.logvar;
      gplv[i] = g[i] * d.prior_logvar;
    }
    store<N, ALIGNED>(grad_mu + first, valid, gm);
    store<N, ALIGNED>(grad_logvar + first, valid, glv);
    if (grad_prior_logvar != nullptr) store<N, ALIGNED>(grad_prior_logvar + first, valid, gplv);
  }
};

}  // namespace

cudaError_t gaussian_kl(const Launch& launch, Dtype dtype, Rows rows, Operand mu, Operand logvar,
                        Operand prior_mu, Operand prior_logvar, void* out, void* partials) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    GaussianKlTerms<T> op;
    op.mu = RowOperand<T>(mu, rows.cols);
    op.logvar = RowOperand<T>(logvar, rows.cols);
    op.prior_mu = RowOperand<T>(prior_mu, rows.cols);
    op.prior_logvar = RowOperand<T>(prior_logvar, rows.cols);
    constexpr int N = kVec<T>;
    const bool aligned = aligned_groups<N>(mu) && aligned_groups<N>(logvar) && aligned_groups<N>(prior_mu) &&
                         aligned_groups<N>(prior_logvar);
    return row_sums<N>(launch, op, rows, aligned, out, partials);
  });
}

cudaError_t gaussian_kl_backward(const Launch& launch, Dtype dtype, Rows rows, const void* grad, Operand mu,
                                 Operand logvar, Operand prior_mu, Operand prior_logvar, void* grad_mu,
                                 void* grad_logvar, void* grad_prior_logvar) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    GaussianKlBackward<T> op;
    op.grad = static_cast<const acc_t<T>*>(grad);
    op.mu = RowOperand<T>(mu, rows.cols);
    op.logvar = RowOperand<T>(logvar, rows.cols);
    op.prior_mu = RowOperand<T>(prior_mu, rows.cols);
    op.prior_logvar = RowOperand<T>(prior_logvar, rows.cols);
    op.grad_mu = static_cast<T*>(grad_mu);
    op.grad_logvar = static_cast<T*>(grad_logvar);
    op.grad_prior_logvar = static_cast<T*>(grad_prior_logvar);
    op.cols = rows.cols;
    const bool aligned = rows.cols % kVec<T> == 0 && aligned16(mu) && aligned16(logvar) && aligned16(prior_mu) &&
                         aligned16(prior_logvar) && aligned16(grad_mu) && aligned16(grad_logvar) &&
                         (grad_prior_logvar == nullptr || aligned16(grad_prior_logvar));
    return for_each_row_group<kVec<T>>(launch, op, rows, aligned);
  });
}

}  // namespace fastgen::cuda
