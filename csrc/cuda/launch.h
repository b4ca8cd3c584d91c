// The CUDA kernels' interface to the torch glue: plain launch functions over
// raw pointers, free of torch, so that every *_kernels.cu compiles with nvcc
// and the CUDA headers alone (tests/cuda/test_kernel_compile.py checks it).
// The glue (csrc/cuda/<op>.cpp) checks shapes, allocates outputs and
// workspaces with torch, and turns a returned error into an exception.
//
// Every launch function enqueues its kernels on `launch.stream` and returns
// the launch error (cudaSuccess if none). Counts are 64-bit throughout.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fastgen/philox_cuda.h"

namespace fastgen::cuda {

enum class Dtype { kFloat32, kFloat64, kFloat16, kBFloat16 };

// Where and how wide to launch: the grid of a kernel is at most
// sm_count * (the blocks of that kernel one SM keeps resident, from the
// occupancy API: the kernels use 16 to 98 registers a thread, so 2 to 8
// blocks of 256 threads), grid-stride loops covering the rest.
struct Launch {
  cudaStream_t stream;
  int device;
  int sm_count;
};

// An input of a row op (csrc/row_shape.h): `period` elements whose flattened
// data repeat to fill rows x cols; row r starts at element (r * cols) % period.
// data == nullptr marks an absent optional operand.
struct Operand {
  const void* data = nullptr;
  int64_t period = 1;
};

struct Rows {
  int64_t rows;
  int64_t cols;
};

// Per-row sums (float32, float64 for float64 inputs) are written to `out`.
// A row longer than kRowChunk columns is summed chunk by chunk into
// `partials`, whose sums are then added in chunk order: results never depend
// on the grid. The glue allocates row_sum_partials(rows) elements of the sum
// dtype for it (0 when no workspace is needed).
constexpr int64_t kRowChunk = 8192;

inline int64_t row_sum_partials(Rows shape) {
  const int64_t chunks = (shape.cols + kRowChunk - 1) / kRowChunk;
  return chunks > 1 ? shape.rows * chunks : 0;
}

// ------------------------------------------------------------- reparameterize
// z[k * n + j] = mu[j] + exp(logvar[j] / 2) * eps[k * n + j] for k < samples,
// eps element i of the stream `philox`; writes [seed, offset] to rng_state.
cudaError_t reparameterize(const Launch& launch, Dtype dtype, int64_t n, int64_t samples, const void* mu,
                           const void* logvar, void* z, const PhiloxCudaArgs& philox, int64_t* rng_state);

// grad_logvar[j] = exp(logvar[j] / 2) / 2 * sum_k grad_z[k * n + j] eps[k * n + j],
// eps regenerated from the device tensor rng_state = [seed, offset].
cudaError_t reparameterize_backward(const Launch& launch, Dtype dtype, int64_t n, int64_t samples,
                                    const void* grad_z, const void* logvar, const int64_t* rng_state,
                                    void* grad_logvar);

// Fills out[0, n) with elements [0, n) of the stream (seed, offset).
cudaError_t philox_normal(const Launch& launch, float* out, int64_t n, uint64_t seed, uint64_t offset);

// Writes [seed, offset] of `philox` to rng_state on the device (one thread).
cudaError_t philox_state(const Launch& launch, const PhiloxCudaArgs& philox, int64_t* rng_state);

// ---------------------------------------------------------- reparameterize_kl
// The samples of reparameterize (same stream) and the per-row KL to N(0, I)
// of mu and logvar (both rows * cols elements), in one pass.
cudaError_t reparameterize_kl(const Launch& launch, Dtype dtype, Rows rows, int64_t samples, const void* mu,
                              const void* logvar, void* z, void* kl, void* partials,
                              const PhiloxCudaArgs& philox, int64_t* rng_state);

// grad_mu = sum_k grad_z + grad_kl[row] * mu;
// grad_logvar = exp(logvar / 2) / 2 * sum_k grad_z eps_k + grad_kl[row] * (e^logvar - 1) / 2.
// grad_z (samples * n elements) and grad_kl (rows, the sum dtype) may be null.
cudaError_t reparameterize_kl_backward(const Launch& launch, Dtype dtype, Rows rows, int64_t samples,
                                       const void* grad_z, const void* grad_kl, const void* mu,
                                       const void* logvar, const int64_t* rng_state, void* grad_mu,
                                       void* grad_logvar);

// ------------------------------------------------- reparameterize_log_weights
// The samples of reparameterize (same stream) and log p(z) - log q(z|x) per
// row of every sample: log_weights holds samples * rows.rows sums,
// sample-major (row k * rows + r is sample k's row r). mu and logvar have
// rows * cols elements; the prior's halves are row operands (absent: N(0, 1)'s).
// `partials` is row_sum_partials({samples * rows, cols}) elements.
cudaError_t reparameterize_log_weights(const Launch& launch, Dtype dtype, Rows rows, int64_t samples, const void* mu,
                                       const void* logvar, Operand prior_mu, Operand prior_logvar, void* z,
                                       void* log_weights, void* partials, const PhiloxCudaArgs& philox,
                                       int64_t* rng_state);

// Full-size gradients from grad_z (samples * n elements) and grad_log_weights
// (samples * rows, the sum dtype), either null when absent; eps regenerated
// from rng_state. A null grad_prior_* is not computed.
cudaError_t reparameterize_log_weights_backward(const Launch& launch, Dtype dtype, Rows rows, int64_t samples,
                                                const void* grad_z, const void* grad_log_weights, const void* mu,
                                                const void* logvar, Operand prior_mu, Operand prior_logvar,
                                                const int64_t* rng_state, void* grad_mu, void* grad_logvar,
                                                void* grad_prior_mu, void* grad_prior_logvar);

// ---------------------------------------------------------- grad_norm_penalty
// Per row: norm = ||grad||_2 and penalty = (norm - center)^2 (the sum dtype).
cudaError_t grad_norm_penalty(const Launch& launch, Dtype dtype, Rows rows, const void* grad, double center,
                              void* penalty, void* norm, void* partials);

// out = 2 grad_penalty[r] (norm[r] - center) / norm[r] * grad (0 where norm[r] = 0).
cudaError_t grad_norm_penalty_backward(const Launch& launch, Dtype dtype, Rows rows, const void* grad_penalty,
                                       const void* grad, const void* norm, double center, void* out);

// weights[r] = the uniform of Philox counter offset + r (tl.rand), then
// out = weights[r] real + (1 - weights[r]) fake for every row r of rows x cols.
cudaError_t random_interpolate(const Launch& launch, Dtype dtype, Rows rows, const void* real, const void* fake,
                               const PhiloxCudaArgs& philox, float* weights, void* out);

// ------------------------------------------------------------------ row ops
// Backward kernels take the per-row upstream gradient `grad` in the sum dtype
// and write full-size (rows * cols) gradients; a null output is not computed.

cudaError_t gaussian_kl(const Launch& launch, Dtype dtype, Rows rows, Operand mu, Operand logvar,
                        Operand prior_mu, Operand prior_logvar, void* out, void* partials);
cudaError_t gaussian_kl_backward(const Launch& launch, Dtype dtype, Rows rows, const void* grad, Operand mu,
                                 Operand logvar, Operand prior_mu, Operand prior_logvar, void* grad_mu,
                                 void* grad_logvar, void* grad_prior_logvar);

cudaError_t bernoulli_log_likelihood(const Launch& launch, Dtype dtype, Rows rows, Operand logits,
                                     Operand target, void* out, void* partials);
cudaError_t bernoulli_log_likelihood_backward(const Launch& launch, Dtype dtype, Rows rows, const void* grad,
                                              Operand logits, Operand target, void* grad_logits,
                                              void* grad_target);

// logvar absent: unit variance.
cudaError_t gaussian_log_likelihood(const Launch& launch, Dtype dtype, Rows rows, Operand x, Operand mean,
                                    Operand logvar, void* out, void* partials);
cudaError_t gaussian_log_likelihood_backward(const Launch& launch, Dtype dtype, Rows rows, const void* grad,
                                             Operand x, Operand mean, Operand logvar, void* grad_x,
                                             void* grad_logvar);

// -------------------------------------------------------------------- clamp
// Clamps tensors[t] (numels[t] elements, contiguous) to [min, max] in place,
// all of them in as few launches as the kernel-argument space allows: one
// launch for up to 1360 tensors (32 KB of kernel parameters, CUDA 12.1 and
// later; 160 with an older toolkit), of any sizes.
cudaError_t clamp(const Launch& launch, Dtype dtype, void* const* tensors, const int64_t* numels, int64_t count,
                  double min, double max);

}  // namespace fastgen::cuda
