// The noise stream of fastgen: counter-based Philox4x32-10 exactly as Triton's
// `tl.randn4x(seed, offset)` defines it (triton/language/random.py).
//
// Element i of a call's flattened output takes lane i % 4 of
// randn4x(seed, base_offset + i / 4). The 64-bit seed is the Philox key
// (low word, high word); the 64-bit counter offset fills the first two counter
// words (low, high) and the other two are zero.
//
// Everything here is plain host/device code with no torch dependency, so the
// CPU kernels, the CUDA kernels and the tests all draw the same numbers.
#pragma once

#include <cstdint>

#include "fastgen/macros.h"
#include "fastgen/math.h"

namespace fastgen {

struct Philox4 {
  uint32_t x[4];
};

FASTGEN_HOST_DEVICE uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(product >> 32);
  return static_cast<uint32_t>(product);
}

constexpr int kPhiloxRounds = 10;

// The key of round `round`: the seed's words raised by the Weyl constants.
FASTGEN_HOST_DEVICE void philox_round_key(uint64_t seed, int round, uint32_t* k0, uint32_t* k1) {
  *k0 = static_cast<uint32_t>(seed) + static_cast<uint32_t>(round) * 0x9E3779B9u;
  *k1 = static_cast<uint32_t>(seed >> 32) + static_cast<uint32_t>(round) * 0xBB67AE85u;
}

// One Philox4x32 round on counter words (c0, c1, c2, c3) under key (k0, k1).
// The CPU kernels run it over arrays of counters, round by round, so that the
// compiler vectorizes across counters.
FASTGEN_HOST_DEVICE void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0,
                                      uint32_t k1) {
  uint32_t hi_b, hi_a;
  const uint32_t lo_b = mulhilo32(0xCD9E8D57u, c2, &hi_b);
  const uint32_t lo_a = mulhilo32(0xD2511F53u, c0, &hi_a);
  c0 = hi_b ^ c1 ^ k0;
  c2 = hi_a ^ c3 ^ k1;
  c1 = lo_b;
  c3 = lo_a;
}

// The initial counter of Triton's randint4x: (offset low, offset high, 0, 0).
FASTGEN_HOST_DEVICE void philox_counter(uint64_t offset, uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3) {
  c0 = static_cast<uint32_t>(offset);
  c1 = static_cast<uint32_t>(offset >> 32);
  c2 = 0;
  c3 = 0;
}

// Ten rounds of Philox4x32 at counter `offset` under key `seed`.
FASTGEN_HOST_DEVICE Philox4 philox4x32_10(uint64_t seed, uint64_t offset) {
  Philox4 state;
  philox_counter(offset, state.x[0], state.x[1], state.x[2], state.x[3]);
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < kPhiloxRounds; ++round) {
    uint32_t k0, k1;
    philox_round_key(seed, round, &k0, &k1);
    philox_round(state.x[0], state.x[1], state.x[2], state.x[3], k0, k1);
  }
  return state;
}

// Triton's uint_to_uniform_float for 32-bit words: the word read as int32,
// folded onto [0, 2^31) by ~x for negatives, times the largest scale that keeps
// the result below 1.
FASTGEN_HOST_DEVICE float uint32_to_uniform(uint32_t bits) {
  int32_t x = static_cast<int32_t>(bits);
  x = x < 0 ? ~x : x;
  return static_cast<float>(x) * 4.6566127342e-10f;
}

// One uniform in [0, 1) per counter, as Triton's tl.rand(seed, offset + i):
// word 0 of Philox at counter offset + i. The gradient penalty's interpolation
// weights are this stream, sample i at counter offset + i.
FASTGEN_HOST_DEVICE float philox_uniform(uint64_t seed, uint64_t counter) {
  return uint32_to_uniform(philox4x32_10(seed, counter).x[0]);
}

// Box-Muller on a pair of uniforms, as Triton's pair_uniform_to_normal:
// r = sqrt(-2 log max(u1, 1e-7)), theta = 2 pi u2, normals r cos theta, r sin theta.
// T is float on the device and a SIMD vector of floats on the CPU; the
// elementary functions resolve by overload (math.h, csrc/cpu/vec_math.h).
template <typename T>
FASTGEN_HOST_DEVICE void box_muller(T u1, T u2, T& normal1, T& normal2) {
  const T radius = sqrt_(T(-2.0f) * log_(maximum_(T(1.0e-7f), u1)));
  const T theta = T(6.283185307179586f) * u2;
  T sin, cos;
  sincos_(theta, sin, cos);
  normal1 = radius * cos;
  normal2 = radius * sin;
}

}  // namespace fastgen
