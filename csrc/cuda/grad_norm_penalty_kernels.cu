// CUDA kernels of grad_norm_penalty (per-row (||grad|| - center)^2: a row sum
// of squares and a per-row finish forward, one pass backward with the saved
// norms) and of random_interpolate (one uniform weight per sample from the
// stream, then the interpolates).
#include "kernel_utils.cuh"

namespace fastgen::cuda {
namespace {

template <typename T>
struct SquareTerms : NoLaunchWork {
  using scalar_t = T;
  const T* grad;

  __device__ const T* row(int64_t r, int64_t cols) const { return grad + r * cols; }

  template <int N, bool ALIGNED>
  __device__ void terms(const T* row, int64_t col, int valid, acc_t<T> (&out)[N]) const {
    acc_t<T> g[N];
    load<N, ALIGNED>(row + col, valid, g);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = g[i] * g[i];
  }
};

// norm[r] (holding the row's sum of squares) becomes its square root; penalty[r] follows.
template <typename Acc>
struct FinishPenalty : NoLaunchWork {
  Acc* norm;
  Acc* penalty;
  Acc center;

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid) const {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      if (i < valid) {
        const Acc root = sqrt_(norm[first + i]);
        norm[first + i] = root;
        penalty[first + i] = fastgen::grad_norm_penalty(root, center);  // math.h's, not the launch function
      }
    }
  }
};

template <typename T>
struct PenaltyBackward : NoLaunchWork {
  const acc_t<T>* grad_penalty;
  const T* grad;
  const acc_t<T>* norm;
  acc_t<T> center;
  T* out;
  int64_t cols;

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid, RowCursor at) const {
    using Acc = acc_t<T>;
    Acc up[N], nv[N], g[N], o[N];
    row_values<N, ALIGNED>(grad_penalty, at, cols, valid, up);
    row_values<N, ALIGNED>(norm, at, cols, valid, nv);
    load<N, ALIGNED>(grad + first, valid, g);
#pragma unroll
    for (int i = 0; i < N; ++i) o[i] = grad_norm_penalty_scale(nv[i], center, up[i]) * g[i];
    store<N, ALIGNED>(out + first, valid, o);
  }
};

struct RowUniforms : NoLaunchWork {
  PhiloxCudaArgs philox;
  float* weights;

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid) const {
    const PhiloxSeedOffset stream = unpack(philox);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      if (i < valid) weights[first + i] = philox_uniform(stream.seed, stream.offset + static_cast<uint64_t>(first + i));
    }
  }
};

template <typename T>
struct Interpolate : NoLaunchWork {
  const T* real;
  const T* fake;
  const float* weights;
  T* out;
  int64_t cols;

  template <int N, bool ALIGNED>
  __device__ void apply(int64_t first, int valid, RowCursor at) const {
    using Acc = acc_t<T>;
    Acc r[N], f[N], o[N];
    load<N, ALIGNED>(real + first, valid, r);
    load<N, ALIGNED>(fake + first, valid, f);
    // ALIGNED: the group lies in one row.
    const Acc row_weight = static_cast<Acc>(weights[at.row]);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      Acc w = row_weight;
      if (!ALIGNED) {
        w = i < valid ? static_cast<Acc>(weights[at.row]) : Acc(0);
        at.next(cols);
      }
      o[i] = interpolate(r[i], f[i], w);
    }
    store<N, ALIGNED>(out + first, valid, o);
  }
};

}  // namespace

cudaError_t grad_norm_penalty(const Launch& launch, Dtype dtype, Rows rows, const void* grad, double center,
                              void* penalty, void* norm, void* partials) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using Acc = acc_t<T>;
    SquareTerms<T> terms;
    terms.grad = static_cast<const T*>(grad);
    const cudaError_t error = row_sums<kVec<T>>(launch, terms, rows, aligned16(grad), norm, partials);
    if (error != cudaSuccess) return error;
    FinishPenalty<Acc> finish;
    finish.norm = static_cast<Acc*>(norm);
    finish.penalty = static_cast<Acc*>(penalty);
    finish.center = static_cast<Acc>(center);
    return for_each_group<1>(launch, finish, rows.rows, false);
  });
}

cudaError_t grad_norm_penalty_backward(const Launch& launch, Dtype dtype, Rows rows, const void* grad_penalty,
                                       const void* grad, const void* norm, double center, void* out) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using Acc = acc_t<T>;
    PenaltyBackward<T> op;
    op.grad_penalty = static_cast<const Acc*>(grad_penalty);
    op.grad = static_cast<const T*>(grad);
    op.norm = static_cast<const Acc*>(norm);
    op.center = static_cast<Acc>(center);
    op.out = static_cast<T*>(out);
    op.cols = rows.cols;
    const bool aligned = rows.cols % kVec<T> == 0 && aligned16(grad) && aligned16(out);
    return for_each_row_group<kVec<T>>(launch, op, rows, aligned);
  });
}

cudaError_t random_interpolate(const Launch& launch, Dtype dtype, Rows rows, const void* real, const void* fake,
                               const PhiloxCudaArgs& philox, float* weights, void* out) {
  RowUniforms uniforms;
  uniforms.philox = philox;
  uniforms.weights = weights;
  const cudaError_t error = for_each_group<1>(launch, uniforms, rows.rows, false);
  if (error != cudaSuccess || rows.rows * rows.cols == 0) return error;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    Interpolate<T> op;
    op.real = static_cast<const T*>(real);
    op.fake = static_cast<const T*>(fake);
    op.weights = weights;
    op.out = static_cast<T*>(out);
    op.cols = rows.cols;
    const bool aligned = rows.cols % kVec<T> == 0 && aligned16(real) && aligned16(fake) && aligned16(out);
    return for_each_row_group<kVec<T>>(launch, op, rows, aligned);
  });
}

}  // namespace fastgen::cuda
