// CUDA kernels of reparameterize (z = mu + exp(logvar / 2) * eps) and of the
// raw noise stream. eps is drawn in registers from (seed, offset), four
// outputs per Philox call, and regenerated the same way in backward; it is
// never stored. Each thread takes a group of mu and logvar and serves every
// sample from it.
#include "kernel_utils.cuh"

namespace fastgen::cuda {
namespace {

template <typename T>
struct Reparameterize {
  const T* mu;
  const T* logvar;
  T* z;
  int64_t n;
  int64_t samples;
  PhiloxCudaArgs philox;
  int64_t* rng_state;

  __device__ void per_launch() const { write_state(rng_state, unpack(philox)); }

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid) const {
    using Acc = acc_t<T>;
    const PhiloxSeedOffset stream = unpack(philox);
    Acc m[N], lv[N];
    load<N, ALIGNED>(mu + first, valid, m);
    load<N, ALIGNED>(logvar + first, valid, lv);
    for (int64_t k = 0; k < samples; ++k) {
      Acc eps[N], out[N];
      stream_normals<N, ALIGNED>(stream, static_cast<uint64_t>(k * n + first), eps);
#pragma unroll
      for (int i = 0; i < N; ++i) out[i] = reparameterize_sample(m[i], lv[i], eps[i]);
      store<N, ALIGNED>(z + k * n + first, valid, out);
    }
  }
};

template <typename T>
struct ReparameterizeBackward : NoLaunchWork {
  const T* grad_z;
  const T* logvar;
  const int64_t* rng_state;
  T* grad_logvar;
  int64_t n;
  int64_t samples;

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid) const {
    using Acc = acc_t<T>;
    const PhiloxSeedOffset stream = read_state(rng_state);
    Acc sum_grad_eps[N];
#pragma unroll
    for (int i = 0; i < N; ++i) sum_grad_eps[i] = Acc(0);
    for (int64_t k = 0; k < samples; ++k) {
      Acc g[N], eps[N];
      load<N, ALIGNED>(grad_z + k * n + first, valid, g);
      stream_normals<N, ALIGNED>(stream, static_cast<uint64_t>(k * n + first), eps);
#pragma unroll
      for (int i = 0; i < N; ++i) sum_grad_eps[i] += g[i] * eps[i];
    }
    Acc lv[N], out[N];
    load<N, ALIGNED>(logvar + first, valid, lv);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = reparameterize_grad_logvar(lv[i], sum_grad_eps[i]);
    store<N, ALIGNED>(grad_logvar + first, valid, out);
  }
};

struct PhiloxNormal : NoLaunchWork {
  float* out;
  PhiloxSeedOffset stream;

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid) const {
    float eps[N];
    stream_normals<N, true>(stream, static_cast<uint64_t>(first), eps);  // first = g * N: whole counters
    store<N, ALIGNED>(out + first, valid, eps);
  }
};

__global__ void philox_state_kernel(PhiloxCudaArgs philox, int64_t* rng_state) {
  write_state(rng_state, unpack(philox));
}

}  // namespace

cudaError_t philox_state(const Launch& launch, const PhiloxCudaArgs& philox, int64_t* rng_state) {
  philox_state_kernel<<<1, 1, 0, launch.stream>>>(philox, rng_state);
  return cudaGetLastError();
}

cudaError_t reparameterize(const Launch& launch, Dtype dtype, int64_t n, int64_t samples, const void* mu,
                           const void* logvar, void* z, const PhiloxCudaArgs& philox, int64_t* rng_state) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const Reparameterize<T> op{static_cast<const T*>(mu), static_cast<const T*>(logvar), static_cast<T*>(z), n,
                               samples, philox, rng_state};
    // Later samples start on a whole group only when n is a multiple of one.
    const bool aligned = aligned16(mu) && aligned16(logvar) && aligned16(z) &&
                         (samples == 1 || n % kNoiseVec<T> == 0);
    return for_each_group<kNoiseVec<T>>(launch, op, n, aligned);
  });
}

cudaError_t reparameterize_backward(const Launch& launch, Dtype dtype, int64_t n, int64_t samples,
                                    const void* grad_z, const void* logvar, const int64_t* rng_state,
                                    void* grad_logvar) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    ReparameterizeBackward<T> op;
    op.grad_z = static_cast<const T*>(grad_z);
    op.logvar = static_cast<const T*>(logvar);
    op.rng_state = rng_state;
    op.grad_logvar = static_cast<T*>(grad_logvar);
    op.n = n;
    op.samples = samples;
    const bool aligned = aligned16(grad_z) && aligned16(logvar) && aligned16(grad_logvar) &&
                         (samples == 1 || n % kNoiseVec<T> == 0);
    return for_each_group<kNoiseVec<T>>(launch, op, n, aligned);
  });
}

cudaError_t philox_normal(const Launch& launch, float* out, int64_t n, uint64_t seed, uint64_t offset) {
  PhiloxNormal op;
  op.out = out;
  op.stream = {seed, offset};
  return for_each_group<kNoiseVec<float>>(launch, op, n, aligned16(out));
}

}  // namespace fastgen::cuda
