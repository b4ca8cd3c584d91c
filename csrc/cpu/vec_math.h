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
template <typename S>
inline Vec<S> log1p_(const Vec<S>& x) { return x.log1p(); }
template <typename S>
inline Vec<S> sqrt_(const Vec<S>& x) { return x.sqrt(); }
template <typename S>
inline Vec<S> sin_(const Vec<S>& x) { return x.sin(); }
template <typename S>
inline Vec<S> cos_(const Vec<S>& x) { return x.cos(); }
template <typename S>
inline Vec<S> abs_(const Vec<S>& x) { return x.abs(); }
template <typename S>
inline Vec<S> maximum_(const Vec<S>& a, const Vec<S>& b) { return at::vec::maximum(a, b); }
template <typename S>
inline Vec<S> minimum_(const Vec<S>& a, const Vec<S>& b) { return at::vec::minimum(a, b); }

}  // namespace fastgen
