// CUDA kernels of reparameterize_kl: in one pass over mu and logvar, the
// samples of reparameterize (same stream, same z) and the per-row KL to
// N(0, I); backward regenerates eps from rng_state.
#include "kernel_utils.cuh"

namespace fastgen::cuda {
namespace {

// A row sum of KL terms that also writes the row's samples.
template <typename T>
struct ReparameterizeKlTerms {
  using scalar_t = T;
  const T* mu;
  const T* logvar;
  T* z;
  int64_t n;
  int64_t samples;
  PhiloxCudaArgs philox;
  int64_t* rng_state;

  struct Row {
    int64_t first;  // the row's first element
    PhiloxSeedOffset stream;
  };

  __device__ void per_launch() const { write_state(rng_state, unpack(philox)); }

  __device__ Row row(int64_t r, int64_t cols) const { return {r * cols, unpack(philox)}; }

  template <int N, bool ALIGNED>
  __device__ void terms(const Row& row, int64_t col, int valid, acc_t<T> (&kl)[N]) const {
    using Acc = acc_t<T>;
    const int64_t j = row.first + col;
    Acc m[N], lv[N];
    load<N, ALIGNED>(mu + j, valid, m);
    load<N, ALIGNED>(logvar + j, valid, lv);
    for (int64_t k = 0; k < samples; ++k) {
      Acc eps[N], out[N];
      stream_normals<N, ALIGNED>(row.stream, static_cast<uint64_t>(k * n + j), eps);
#pragma unroll
      for (int i = 0; i < N; ++i) out[i] = reparameterize_sample(m[i], lv[i], eps[i]);
      store<N, ALIGNED>(z + k * n + j, valid, out);
    }
#pragma unroll
    for (int i = 0; i < N; ++i) kl[i] = kl_std_normal(m[i], lv[i]);
  }
};

// Gradients: reparameterize_kl_grad_mu / _grad_logvar of fastgen/math.h.
template <typename T>
struct ReparameterizeKlBackward : NoLaunchWork {
  const T* grad_z;           // null: no gradient of z
  const acc_t<T>* grad_kl;   // null: no gradient of kl
  const T* mu;
  const T* logvar;
  const int64_t* rng_state;
  T* grad_mu;
  T* grad_logvar;
  int64_t n;
  int64_t cols;
  int64_t samples;

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid, RowCursor at) const {
    using Acc = acc_t<T>;
    Acc sum_g[N], sum_g_eps[N], g_kl[N];
#pragma unroll
    for (int i = 0; i < N; ++i) {
      sum_g[i] = Acc(0);
      sum_g_eps[i] = Acc(0);
      g_kl[i] = Acc(0);
    }
    if (grad_z != nullptr) {
      const PhiloxSeedOffset stream = read_state(rng_state);
      for (int64_t k = 0; k < samples; ++k) {
        Acc g[N], eps[N];
        load<N, ALIGNED>(grad_z + k * n + first, valid, g);
        stream_normals<N, ALIGNED>(stream, static_cast<uint64_t>(k * n + first), eps);
#pragma unroll
        for (int i = 0; i < N; ++i) {
          sum_g[i] += g[i];
          sum_g_eps[i] += g[i] * eps[i];
        }
      }
    }
    if (grad_kl != nullptr) row_values<N, ALIGNED>(grad_kl, at, cols, valid, g_kl);
    Acc m[N], lv[N], gm[N], glv[N];
    load<N, ALIGNED>(mu + first, valid, m);
    load<N, ALIGNED>(logvar + first, valid, lv);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      gm[i] = reparameterize_kl_grad_mu(m[i], sum_g[i], g_kl[i]);
      glv[i] = reparameterize_kl_grad_logvar(lv[i], sum_g_eps[i], g_kl[i]);
    }
    store<N, ALIGNED>(grad_mu + first, valid, gm);
    store<N, ALIGNED>(grad_logvar + first, valid, glv);
  }
};

}  // namespace

cudaError_t reparameterize_kl(const Launch& launch, Dtype dtype, Rows rows, int64_t samples, const void* mu,
                              const void* logvar, void* z, void* kl, void* partials,
                              const PhiloxCudaArgs& philox, int64_t* rng_state) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const ReparameterizeKlTerms<T> op{static_cast<const T*>(mu), static_cast<const T*>(logvar),
                                      static_cast<T*>(z),        rows.rows * rows.cols,
                                      samples,                   philox,
                                      rng_state};
    // With cols a multiple of N (row_sums checks it; rows with one column),
    // so are the row starts and n: every group is aligned in mu, logvar and
    // every sample of z.
    return row_sums<kNoiseVec<T>>(launch, op, rows, aligned16(mu) && aligned16(logvar) && aligned16(z), kl,
                                  partials);
  });
}

cudaError_t reparameterize_kl_backward(const Launch& launch, Dtype dtype, Rows rows, int64_t samples,
                                       const void* grad_z, const void* grad_kl, const void* mu,
                                       const void* logvar, const int64_t* rng_state, void* grad_mu,
                                       void* grad_logvar) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    ReparameterizeKlBackward<T> op;
    op.grad_z = static_cast<const T*>(grad_z);
    op.grad_kl = static_cast<const acc_t<T>*>(grad_kl);
    op.mu = static_cast<const T*>(mu);
    op.logvar = static_cast<const T*>(logvar);
    op.rng_state = rng_state;
    op.grad_mu = static_cast<T*>(grad_mu);
    op.grad_logvar = static_cast<T*>(grad_logvar);
    op.n = rows.rows * rows.cols;
    op.cols = rows.cols;
    op.samples = samples;
    // Groups within one row (for grad_kl) and aligned in every sample of grad_z.
    const bool aligned = rows.cols % kNoiseVec<T> == 0 && aligned16(mu) && aligned16(logvar) &&
                         aligned16(grad_mu) && aligned16(grad_logvar) &&
                         (grad_z == nullptr || aligned16(grad_z));
    return for_each_row_group<kNoiseVec<T>>(launch, op, rows, aligned);
  });
}

}  // namespace fastgen::cuda
