// SIMD overloads of the elementary functions that csrc/include/fastgen/math.h
// spells exp_, log_, ...: with these, every formula template there runs on
// at::vec::Vectorized lanes as it runs on scalars.
//
// Include this before fastgen/math.h (kernel_utils.h does): a template finds
// the overloads declared before its definition, and argument-dependent lookup
// would only search at::vec.
#pragma once

#include <ATen/cpu/vec/vec.h>

namespace fastgen {

template <typename S>
using Vec = at::vec::Vectorized<S>;

template <typename S>
inline Vec<S> exp_(const Vec<S>& x) { return x.exp(); }
template <typename S>
inline Vec<S> log_(const Vec<S>& x) { return x.log(); }

// float lanes take the faster SIMD variants: exp within 20 ulp (about 1e-6
// relative), log and sin/cos within 3.5 ulp. Every result is a float32 value
// summed or scaled once more, and the noise stream is specified to 1e-5.
// exp_u20 maps NaN to +inf: NaN lanes are passed through, so that NaN in
// gives NaN out.
inline Vec<float> exp_(const Vec<float>& x) { return Vec<float>::blendv(x.exp_u20(), x, x.isnan()); }

#if defined(CPU_CAPABILITY_AVX512)
inline Vec<float> log_(const Vec<float>& x) { return Sleef_logf16_u35(x); }
inline void sincos_(const Vec<float>& x, Vec<float>& sin, Vec<float>& cos) {
  const Sleef___m512_2 both = Sleef_sincosf16_u35(x);
  sin = both.x;
  cos = both.y;
}
#elif defined(CPU_CAPABILITY_AVX2)
inline Vec<float> log_(const Vec<float>& x) { return Sleef_logf8_u35(x); }
inline void sincos_(const Vec<float>& x, Vec<float>& sin, Vec<float>& cos) {
  const Sleef___m256_2 both = Sleef_sincosf8_u35(x);
  sin = both.x;
  cos = both.y;
}
#else
inline void sincos_(const Vec<float>& x, Vec<float>& sin, Vec<float>& cos) {
  sin = x.sin();
  cos = x.cos();
}
#endif
template <typename S>
inline Vec<S> log1p_(const Vec<S>& x) { return x.log1p(); }
template <typename S>
inline Vec<S> sqrt_(const Vec<S>& x) { return x.sqrt(); }
template <typename S>
inline Vec<S> abs_(const Vec<S>& x) { return x.abs(); }
template <typename S>
inline Vec<S> maximum_(const Vec<S>& a, const Vec<S>& b) { return at::vec::maximum(a, b); }
template <typename S>
inline Vec<S> minimum_(const Vec<S>& a, const Vec<S>& b) { return at::vec::minimum(a, b); }
template <typename S>
inline Vec<S> zero_where_zero_(const Vec<S>& x, const Vec<S>& value) {
  return Vec<S>::blendv(value, Vec<S>(S(0)), x == Vec<S>(S(0)));
}

// log1p for float lanes as log(1 + x): its one use, softplus, passes x in
// (0, 1], where this is within 6e-8 absolute of log1p and much cheaper.
inline Vec<float> log1p_(const Vec<float>& x) { return log_(Vec<float>(1.0f) + x); }

// v with the lanes from `count` on zeroed: the tail of a block in a sum.
template <typename S>
inline Vec<S> first_lanes(const Vec<S>& v, int64_t count) {
  return count >= Vec<S>::size() ? v : Vec<S>::set(Vec<S>(S(0)), v, count);
}

}  // namespace fastgen
