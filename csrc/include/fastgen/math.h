// The formulas of every fused op, written once for all backends.
//
// Each formula is a template over T, the compute type: float or double for a
// scalar (host or device), or a SIMD vector on the CPU (csrc/cpu/vec_math.h
// gives the vector overloads of the elementary functions below). Half types
// are converted to float before they reach these functions, so every sum is
// accumulated in at least float32.
#pragma once

#include <cmath>

#include "fastgen/macros.h"

namespace fastgen {

// Elementary functions with one spelling for scalars and vectors.
FASTGEN_HOST_DEVICE float exp_(float x) { return ::expf(x); }
FASTGEN_HOST_DEVICE double exp_(double x) { return ::exp(x); }
FASTGEN_HOST_DEVICE float log_(float x) { return ::logf(x); }
FASTGEN_HOST_DEVICE double log_(double x) { return ::log(x); }
FASTGEN_HOST_DEVICE float log1p_(float x) { return ::log1pf(x); }
FASTGEN_HOST_DEVICE double log1p_(double x) { return ::log1p(x); }
FASTGEN_HOST_DEVICE float sqrt_(float x) { return ::sqrtf(x); }
FASTGEN_HOST_DEVICE double sqrt_(double x) { return ::sqrt(x); }
FASTGEN_HOST_DEVICE void sincos_(float x, float& sin, float& cos) {
#if defined(__CUDACC__)
  ::sincosf(x, &sin, &cos);
#else
  sin = ::sinf(x);
  cos = ::cosf(x);
#endif
}
FASTGEN_HOST_DEVICE float abs_(float x) { return ::fabsf(x); }
FASTGEN_HOST_DEVICE double abs_(double x) { return ::fabs(x); }
FASTGEN_HOST_DEVICE float maximum_(float a, float b) { return a > b ? a : b; }
FASTGEN_HOST_DEVICE double maximum_(double a, double b) { return a > b ? a : b; }
FASTGEN_HOST_DEVICE float minimum_(float a, float b) { return a < b ? a : b; }
FASTGEN_HOST_DEVICE double minimum_(double a, double b) { return a < b ? a : b; }
// value, or 0 where x is 0 (value may be inf or NaN there).
FASTGEN_HOST_DEVICE float zero_where_zero_(float x, float value) { return x == 0.0f ? 0.0f : value; }
FASTGEN_HOST_DEVICE double zero_where_zero_(double x, double value) { return x == 0.0 ? 0.0 : value; }

constexpr double kLog2Pi = 1.8378770664093453;  // log(2 pi)

// ---------------------------------------------------------------- reparameterize
// z = mu + exp(logvar / 2) * eps
template <typename T>
FASTGEN_HOST_DEVICE T std_from_logvar(T logvar) {
  return exp_(T(0.5f) * logvar);
}

template <typename T>
FASTGEN_HOST_DEVICE T reparameterize_sample(T mu, T logvar, T eps) {
  return mu + std_from_logvar(logvar) * eps;
}

// d z / d logvar = exp(logvar / 2) * eps / 2, so for upstream gradients g_k of
// K samples sharing one (mu, logvar): grad_logvar = std / 2 * sum_k g_k eps_k.
template <typename T>
FASTGEN_HOST_DEVICE T reparameterize_grad_logvar(T logvar, T sum_grad_eps) {
  return T(0.5f) * std_from_logvar(logvar) * sum_grad_eps;
}

// ---------------------------------------------------------------- Gaussian KL
// KL(N(mu, e^logvar) || N(0, 1)) = (e^logvar + mu^2 - 1 - logvar) / 2
template <typename T>
FASTGEN_HOST_DEVICE T kl_std_normal(T mu, T logvar) {
  return T(0.5f) * (exp_(logvar) + mu * mu - T(1.0f) - logvar);
}

// d/d logvar of kl_std_normal; d/d mu is mu itself.
template <typename T>
FASTGEN_HOST_DEVICE T kl_std_normal_grad_logvar(T logvar) {
  return T(0.5f) * (exp_(logvar) - T(1.0f));
}

// reparameterize_kl's gradients: the samples' (upstream gradients g_k summed
// over the K samples) plus the KL's, scaled by its upstream gradient g_kl:
// grad_mu = sum_k g_k + g_kl * mu
// grad_logvar = std / 2 * sum_k g_k eps_k + g_kl * (e^logvar - 1) / 2
template <typename T>
FASTGEN_HOST_DEVICE T reparameterize_kl_grad_mu(T mu, T sum_grad, T grad_kl) {
  return sum_grad + grad_kl * mu;
}

template <typename T>
FASTGEN_HOST_DEVICE T reparameterize_kl_grad_logvar(T logvar, T sum_grad_eps, T grad_kl) {
  return reparameterize_grad_logvar(logvar, sum_grad_eps) + grad_kl * kl_std_normal_grad_logvar(logvar);
}

// KL(N(mu, e^lv) || N(pm, e^plv)) = (plv - lv + (e^lv + (mu - pm)^2) e^-plv - 1) / 2
// inv_prior_var = e^-plv is an argument so that a prior broadcast over rows
// can have it computed once per call instead of once per element.
template <typename T>
FASTGEN_HOST_DEVICE T kl_diag_normal(T mu, T logvar, T prior_mu, T prior_logvar, T inv_prior_var) {
  const T diff = mu - prior_mu;
  return T(0.5f) * (prior_logvar - logvar + (exp_(logvar) + diff * diff) * inv_prior_var - T(1.0f));
}

template <typename T>
FASTGEN_HOST_DEVICE T kl_diag_normal(T mu, T logvar, T prior_mu, T prior_logvar) {
  return kl_diag_normal(mu, logvar, prior_mu, prior_logvar, exp_(T(0.0f) - prior_logvar));
}

// Gradients of kl_diag_normal. The prior mean's is -grad_mu; the prior
// log-variance's is -grad_logvar - (mu - pm)^2 e^-plv / 2.
template <typename T>
struct KlDiagGrads {
  T mu, logvar, prior_logvar;
};

template <typename T>
FASTGEN_HOST_DEVICE KlDiagGrads<T> kl_diag_normal_grads(T mu, T logvar, T prior_mu,
                                                        T prior_logvar) {
  const T diff = mu - prior_mu;
  const T inv_prior_var = exp_(T(0.0f) - prior_logvar);
  const T grad_logvar = T(0.5f) * (exp_(logvar - prior_logvar) - T(1.0f));
  return {diff * inv_prior_var, grad_logvar,
          T(0.0f) - grad_logvar - T(0.5f) * diff * diff * inv_prior_var};
}

// ---------------------------------------------------------------- Bernoulli
// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|), finite for any finite x.
template <typename T>
FASTGEN_HOST_DEVICE T softplus(T x) {
  return maximum_(x, T(0.0f)) + log1p_(exp_(T(0.0f) - abs_(x)));
}

// log p(target | logits) = target * logits - softplus(logits)
template <typename T>
FASTGEN_HOST_DEVICE T bernoulli_log_prob(T logits, T target) {
  return target * logits - softplus(logits);
}

// d/d logits = target - sigmoid(logits); d/d target = logits.
template <typename T>
FASTGEN_HOST_DEVICE T bernoulli_log_prob_grad_logits(T logits, T target) {
  return target - T(1.0f) / (T(1.0f) + exp_(T(0.0f) - logits));
}

// ---------------------------------------------------------------- Gaussian log-density
// log N(x; mean, e^logvar) = -(log 2 pi + logvar + (x - mean)^2 e^-logvar) / 2
template <typename T>
FASTGEN_HOST_DEVICE T gaussian_log_prob(T x, T mean, T logvar) {
  const T diff = x - mean;
  return T(-0.5f) * (T(kLog2Pi) + logvar + diff * diff * exp_(T(0.0f) - logvar));
}

// Unit variance: -(log 2 pi + (x - mean)^2) / 2
template <typename T>
FASTGEN_HOST_DEVICE T gaussian_log_prob_unit(T x, T mean) {
  const T diff = x - mean;
  return T(-0.5f) * (T(kLog2Pi) + diff * diff);
}

// Gradients: d/dx = -(x - mean) e^-logvar (d/d mean is its negative);
// d/d logvar = ((x - mean)^2 e^-logvar - 1) / 2.
template <typename T>
struct GaussianLogProbGrads {
  T x, logvar;
};

template <typename T>
FASTGEN_HOST_DEVICE GaussianLogProbGrads<T> gaussian_log_prob_grads(T x, T mean, T logvar) {
  const T diff = x - mean;
  const T scaled = diff * exp_(T(0.0f) - logvar);
  return {T(0.0f) - scaled, T(0.5f) * (scaled * diff - T(1.0f))};
}

template <typename T>
FASTGEN_HOST_DEVICE T gaussian_log_prob_unit_grad_x(T x, T mean) {
  return mean - x;
}

// ---------------------------------------------------------------- IWAE log-weights
// For a sample z = mu + e^{lv/2} eps of q = N(mu, e^lv), the per-element term of
// log p(z) - log q(z|x); the log 2 pi of the two densities cancel:
//   log q = -(log 2 pi + lv + eps^2) / 2
//   log p = -(log 2 pi + plv + (z - pm)^2 e^-plv) / 2   (N(0, 1): pm = plv = 0)
// inv_prior_var = e^-plv is an argument, as in kl_diag_normal.
template <typename T>
FASTGEN_HOST_DEVICE T log_weight_std_normal(T z, T logvar, T eps) {
  return T(0.5f) * (logvar + eps * eps - z * z);
}

template <typename T>
FASTGEN_HOST_DEVICE T log_weight_diag_normal(T z, T logvar, T eps, T prior_mu, T prior_logvar, T inv_prior_var) {
  const T diff = z - prior_mu;
  return T(0.5f) * (logvar + eps * eps - prior_logvar - diff * diff * inv_prior_var);
}

// Gradients, for samples z_k = mu + std eps_k with upstream gradients g_z (of
// z_k) and g_w (of the sample's log-weight). With the prior's score
// s_k = (z_k - pm) e^-plv (s_k = z_k for N(0, 1)), the gradient reaching z_k is
// a_k = g_z - g_w s_k, and over the K samples
//   grad_mu = sum_k a_k
//   grad_logvar = std / 2 * sum_k a_k eps_k + sum_k g_w / 2
//   grad_prior_mu = sum_k g_w s_k
//   grad_prior_logvar = sum_k g_w (s_k (z_k - pm) - 1) / 2
// (eps_k is noise: the eps^2 of log q has no gradient).
template <typename T>
FASTGEN_HOST_DEVICE T log_weight_score(T z, T prior_mu, T inv_prior_var) {
  return (z - prior_mu) * inv_prior_var;
}

template <typename T>
FASTGEN_HOST_DEVICE T log_weight_grad_z(T grad_z, T grad_w, T score) {
  return grad_z - grad_w * score;
}

template <typename T>
FASTGEN_HOST_DEVICE T log_weights_grad_logvar(T logvar, T sum_grad_z_eps, T sum_grad_w) {
  return reparameterize_grad_logvar(logvar, sum_grad_z_eps) + T(0.5f) * sum_grad_w;
}

template <typename T>
FASTGEN_HOST_DEVICE T log_weight_grad_prior_logvar(T grad_w, T score, T diff) {
  return T(0.5f) * grad_w * (score * diff - T(1.0f));
}

// ---------------------------------------------------------------- gradient penalty
// WGAN-GP's per-sample penalty (||g||_2 - c)^2 from the norm of a row.
template <typename T>
FASTGEN_HOST_DEVICE T grad_norm_penalty(T norm, T center) {
  const T diff = norm - center;
  return diff * diff;
}

// d/dg of (||g|| - c)^2 is 2 (||g|| - c) g / ||g||: g times this per-row factor
// (with the upstream gradient folded in); 0 where ||g|| = 0, as torch's norm.
template <typename T>
FASTGEN_HOST_DEVICE T grad_norm_penalty_scale(T norm, T center, T grad_out) {
  return zero_where_zero_(norm, T(2.0f) * grad_out * (norm - center) / norm);
}

// The penalty's interpolate of a real and a fake sample, eps its sample's
// weight in [0, 1): eps x + (1 - eps) x~.
template <typename T>
FASTGEN_HOST_DEVICE T interpolate(T real, T fake, T eps) {
  return eps * real + (T(1.0f) - eps) * fake;
}

}  // namespace fastgen
