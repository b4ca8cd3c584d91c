// CUDA kernels of reparameterize_log_weights: in one pass over mu and logvar,
// the samples of reparameterize (same stream, same z) and per row of every
// sample log p(z) - log q(z|x); backward regenerates eps and recomputes z.
#include "kernel_utils.cuh"

namespace fastgen::cuda {
namespace {

// A row sum over samples * rows rows: sample k's row r is row k * rows + r,
// whose mu and logvar are row r's (their period is rows) and whose elements
// are those of z and of the stream from (k * rows + r) * cols.
template <typename T>
struct LogWeightsTerms {
  using scalar_t = T;
  RowOperand<T> mu, logvar, prior_mu, prior_logvar;
  T* z;
  PhiloxCudaArgs philox;
  int64_t* rng_state;

  struct Row {
    int64_t first;
    const T* mu;
    const T* logvar;
    const T* prior_mu;      // null: mean 0
    const T* prior_logvar;  // null: log-variance 0
    PhiloxSeedOffset stream;
  };

  __device__ void per_launch() const { write_state(rng_state, unpack(philox)); }

  __device__ Row row(int64_t r, int64_t cols) const {
    return {r * cols,
            mu.row(r, cols),
            logvar.row(r, cols),
            prior_mu.defined() ? prior_mu.row(r, cols) : nullptr,
            prior_logvar.defined() ? prior_logvar.row(r, cols) : nullptr,
            unpack(philox)};
  }

  template <int N, bool ALIGNED>
  __device__ void terms(const Row& row, int64_t col, int valid, acc_t<T> (&log_weight)[N]) const {
    using Acc = acc_t<T>;
    Acc m[N], lv[N], eps[N], out[N];
    load<N, ALIGNED>(row.mu + col, valid, m);
    load<N, ALIGNED>(row.logvar + col, valid, lv);
    stream_normals<N, ALIGNED>(row.stream, static_cast<uint64_t>(row.first + col), eps);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = reparameterize_sample(m[i], lv[i], eps[i]);
    store<N, ALIGNED>(z + row.first + col, valid, out);
    if (row.prior_mu == nullptr && row.prior_logvar == nullptr) {
#pragma unroll
      for (int i = 0; i < N; ++i) log_weight[i] = log_weight_std_normal(out[i], lv[i], eps[i]);
      return;
    }
    // A missing half of the prior is its N(0, 1) value: mean 0 or log-variance 0.
    Acc pm[N], plv[N];
    load_or_zeros<N, ALIGNED>(row.prior_mu ? row.prior_mu + col : nullptr, valid, pm);
    load_or_zeros<N, ALIGNED>(row.prior_logvar ? row.prior_logvar + col : nullptr, valid, plv);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      log_weight[i] = log_weight_diag_normal(out[i], lv[i], eps[i], pm[i], plv[i], exp_(Acc(0) - plv[i]));
    }
  }
};

// Gradients: log_weight_grad_z and the sums over samples of fastgen/math.h.
template <typename T>
struct LogWeightsBackward : NoLaunchWork {
  const T* grad_z;         // null: no gradient of z
  const acc_t<T>* grad_w;  // null: no gradient of the log-weights
  const T* mu;
  const T* logvar;
  RowOperand<T> prior_mu, prior_logvar;
  const int64_t* rng_state;
  T* grad_mu;
  T* grad_logvar;
  T* grad_prior_mu;      // null: not wanted
  T* grad_prior_logvar;  // null: not wanted
  int64_t rows;
  int64_t cols;
  int64_t samples;

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid, RowCursor at) const {
    using Acc = acc_t<T>;
    const int64_t n = rows * cols;
    Acc m[N], lv[N], pm[N], plv[N], inv[N];
    load<N, ALIGNED>(mu + first, valid, m);
    load<N, ALIGNED>(logvar + first, valid, lv);
    load_elements<N, ALIGNED>(prior_mu, at, cols, valid, pm);
    load_elements<N, ALIGNED>(prior_logvar, at, cols, valid, plv);
    Acc sum_a[N], sum_a_eps[N], sum_gw[N], sum_gw_s[N], sum_plv[N];
#pragma unroll
    for (int i = 0; i < N; ++i) {
      inv[i] = prior_logvar.defined() ? exp_(Acc(0) - plv[i]) : Acc(1);
      sum_a[i] = sum_a_eps[i] = sum_gw[i] = sum_gw_s[i] = sum_plv[i] = Acc(0);
    }
    const PhiloxSeedOffset stream = read_state(rng_state);
    for (int64_t k = 0; k < samples; ++k) {
      Acc eps[N], gz[N], gw[N];
      stream_normals<N, ALIGNED>(stream, static_cast<uint64_t>(k * n + first), eps);
      load_or_zeros<N, ALIGNED>(grad_z ? grad_z + k * n + first : nullptr, valid, gz);
      if (grad_w != nullptr) {
        row_values<N, ALIGNED>(grad_w + k * rows, at, cols, valid, gw);
      } else {
#pragma unroll
        for (int i = 0; i < N; ++i) gw[i] = Acc(0);
      }
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const Acc sample = reparameterize_sample(m[i], lv[i], eps[i]);
        const Acc diff = sample - pm[i];
        const Acc score = log_weight_score(sample, pm[i], inv[i]);
        const Acc a = log_weight_grad_z(gz[i], gw[i], score);
        sum_a[i] += a;
        sum_a_eps[i] += a * eps[i];
        sum_gw[i] += gw[i];
        sum_gw_s[i] += gw[i] * score;
        sum_plv[i] += log_weight_grad_prior_logvar(gw[i], score, diff);
      }
    }
    Acc glv[N];
#pragma unroll
    for (int i = 0; i < N; ++i) glv[i] = log_weights_grad_logvar(lv[i], sum_a_eps[i], sum_gw[i]);
    store<N, ALIGNED>(grad_mu + first, valid, sum_a);
    store<N, ALIGNED>(grad_logvar + first, valid, glv);
    if (grad_prior_mu != nullptr) store<N, ALIGNED>(grad_prior_mu + first, valid, sum_gw_s);
    if (grad_prior_logvar != nullptr) store<N, ALIGNED>(grad_prior_logvar + first, valid, sum_plv);
  }
};

}  // namespace

cudaError_t reparameterize_log_weights(const Launch& launch, Dtype dtype, Rows rows, int64_t samples, const void* mu,
                                       const void* logvar, Operand prior_mu, Operand prior_logvar, void* z,
                                       void* log_weights, void* partials, const PhiloxCudaArgs& philox,
                                       int64_t* rng_state) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = rows.rows * rows.cols;
    constexpr int N = kNoiseVec<T>;
    const Operand mu_rows{mu, n > 0 ? n : 1}, logvar_rows{logvar, n > 0 ? n : 1};  // repeated for every sample
    LogWeightsTerms<T> op;
    op.mu = RowOperand<T>(mu_rows, rows.cols);
    op.logvar = RowOperand<T>(logvar_rows, rows.cols);
    op.prior_mu = RowOperand<T>(prior_mu, rows.cols);
    op.prior_logvar = RowOperand<T>(prior_logvar, rows.cols);
    op.z = static_cast<T*>(z);
    op.philox = philox;
    op.rng_state = rng_state;
    // With cols a multiple of N (row_sums checks it) every row start is a
    // whole group in mu, logvar, the prior and every sample of z.
    const bool aligned = aligned_groups<N>(mu_rows) && aligned_groups<N>(logvar_rows) &&
                         aligned_groups<N>(prior_mu) && aligned_groups<N>(prior_logvar) && aligned16(z);
    return row_sums<N>(launch, op, Rows{samples * rows.rows, rows.cols}, aligned, log_weights, partials);
  });
}

cudaError_t reparameterize_log_weights_backward(const Launch& launch, Dtype dtype, Rows rows, int64_t samples,
                                                const void* grad_z, const void* grad_log_weights, const void* mu,
                                                const void* logvar, Operand prior_mu, Operand prior_logvar,
                                                const int64_t* rng_state, void* grad_mu, void* grad_logvar,
                                                void* grad_prior_mu, void* grad_prior_logvar) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    LogWeightsBackward<T> op;
    op.grad_z = static_cast<const T*>(grad_z);
    op.grad_w = static_cast<const acc_t<T>*>(grad_log_weights);
    op.mu = static_cast<const T*>(mu);
    op.logvar = static_cast<const T*>(logvar);
    op.prior_mu = RowOperand<T>(prior_mu, rows.cols);
    op.prior_logvar = RowOperand<T>(prior_logvar, rows.cols);
    op.rng_state = rng_state;
    op.grad_mu = static_cast<T*>(grad_mu);
    op.grad_logvar = static_cast<T*>(grad_logvar);
    op.grad_prior_mu = static_cast<T*>(grad_prior_mu);
    op.grad_prior_logvar = static_cast<T*>(grad_prior_logvar);
    op.rows = rows.rows;
    op.cols = rows.cols;
    op.samples = samples;
    // Groups within one row (for grad_log_weights and the prior) and aligned in every array.
    const bool aligned = rows.cols % kNoiseVec<T> == 0 && aligned16(mu) && aligned16(logvar) &&
                         aligned16(prior_mu) && aligned16(prior_logvar) && aligned16(grad_mu) &&
                         aligned16(grad_logvar) && (grad_z == nullptr || aligned16(grad_z)) &&
                         (grad_prior_mu == nullptr || aligned16(grad_prior_mu)) &&
                         (grad_prior_logvar == nullptr || aligned16(grad_prior_logvar));
    return for_each_row_group<kNoiseVec<T>>(launch, op, rows, aligned);
  });
}

}  // namespace fastgen::cuda
