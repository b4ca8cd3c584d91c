// Building blocks shared by the CPU kernels: blocks of elements converted to
// the compute type, rows with broadcast operands, deterministic parallel row
// sums, the noise stream in SIMD form, and seeding from the CPU generator.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

// vec_math.h first: see there.
#include "vec_math.h"
#include "fastgen/philox.h"

namespace fastgen::cpu {

// Elements per block: a handful of operands of this size stay in L1.
constexpr int64_t kBlock = 256;
// Columns per parallel task of a row sum: long rows are split into chunks of
// this many columns whose partial sums are added in a fixed order, so results
// do not depend on the number of threads.
constexpr int64_t kChunk = 16384;
// Elements per parallel task of an elementwise kernel.
constexpr int64_t kGrain = 32768;

template <typename scalar_t>
using opmath_t = at::opmath_type<scalar_t>;

// Rounds n up to whole SIMD vectors of S.
template <typename S>
constexpr int64_t vec_padded(int64_t n) {
  constexpr int64_t width = Vec<S>::size();
  return (n + width - 1) / width * width;
}

// A block of a row op's work: `rows` consecutive rows from `row` and, of
// each, the columns [col, col + n / rows). Long rows (cols >= kBlock) are cut
// into blocks of one row and at most kBlock columns; short rows are packed
// whole, kBlock / cols of them to a block, so that every block has nearly
// kBlock elements whatever the row length (event_dims=0 makes rows of one
// element). Either way the block's n elements are contiguous in a full-size
// tensor, from element row * cols + col.
struct RowBlock {
  int64_t row;
  int64_t rows;
  int64_t col;
  int64_t n;

  int64_t first(int64_t cols) const { return row * cols + col; }
};

// Returns a pointer to n elements of src in the compute type, padded with
// zeros to whole vectors. An input already in the compute type whose n is a
// whole number of vectors is read in place; anything else is converted into
// buf (kBlock elements).
template <typename opmath, typename scalar_t>
inline const opmath* load_block(const scalar_t* src, int64_t n, opmath* buf) {
  if constexpr (std::is_same_v<scalar_t, opmath>) {
    if (n % Vec<opmath>::size() == 0) return src;
  }
  for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<opmath>(src[i]);
  for (int64_t i = n; i < vec_padded<opmath>(n); ++i) buf[i] = opmath(0);
  return buf;
}

// Where a kernel writes n results for dst: dst itself when it holds the
// compute type and n is a whole number of vectors, else buf, which
// store_block converts.
template <typename opmath, typename scalar_t>
inline opmath* output_block(scalar_t* dst, int64_t n, opmath* buf) {
  if constexpr (std::is_same_v<scalar_t, opmath>) {
    if (n % Vec<opmath>::size() == 0) return dst;
  }
  return buf;
}

template <typename opmath, typename scalar_t>
inline void store_block(scalar_t* dst, const opmath* results, int64_t n) {
  if (static_cast<const void*>(dst) == static_cast<const void*>(results)) return;
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(results[i]);
}

// An input whose flattened data repeats to fill the op's rows x cols: the
// full tensor (period rows * cols) or a broadcast one such as a learned prior
// of shape (D,) (period D). Row r begins at element (r * cols) % period.
template <typename scalar_t>
struct RowOperand {
  const scalar_t* data = nullptr;
  int64_t period = 1;

  RowOperand() = default;
  explicit RowOperand(const at::Tensor& t)
      : data(t.defined() ? t.const_data_ptr<scalar_t>() : nullptr),
        period(t.defined() ? std::max<int64_t>(t.numel(), 1) : 1) {}

  bool defined() const { return data != nullptr; }

  // The block's elements of this operand in the compute type (load_block's
  // contract). Short rows of a broadcast operand may wrap around its period.
  template <typename opmath>
  const opmath* load(const RowBlock& block, int64_t cols, opmath* buf) const {
    const int64_t start = (block.row * cols) % period + block.col;
    if (start + block.n <= period) return load_block(data + start, block.n, buf);
    for (int64_t done = 0, at = start; done < block.n; at = 0) {
      const int64_t take = std::min(block.n - done, period - at);
      for (int64_t i = 0; i < take; ++i) buf[done + i] = static_cast<opmath>(data[at + i]);
      done += take;
    }
    for (int64_t i = block.n; i < vec_padded<opmath>(block.n); ++i) buf[i] = opmath(0);
    return buf;
  }
};

// Applies fn(i) for i = 0, W, 2W, ... < n, W the vector width of S: the body
// of a block loop over padded buffers.
template <typename S, typename Fn>
inline void for_each_vector(int64_t n, const Fn& fn) {
  for (int64_t i = 0; i < n; i += Vec<S>::size()) fn(i);
}

template <typename S>
inline S sum_lanes(const Vec<S>& v) {
  alignas(64) S lanes[Vec<S>::size()];
  v.store(lanes);
  S total = S(0);
  for (int64_t i = 0; i < Vec<S>::size(); ++i) total += lanes[i];
  return total;
}

// The sum of n consecutive values: in vectors when they fill at least one (a
// scalar sum of a row of 255 is one dependent add after another), the last
// vector masked so that nothing past n is read.
template <typename S>
inline S sum_of(const S* values, int64_t n) {
  constexpr int64_t width = Vec<S>::size();
  if (n < width) {
    S total = S(0);
    for (int64_t i = 0; i < n; ++i) total += values[i];
    return total;
  }
  Vec<S> acc = Vec<S>::loadu(values);
  int64_t i = width;
  for (; i + width <= n; i += width) acc = acc + Vec<S>::loadu(values + i);
  if (i < n) acc = acc + Vec<S>::loadu(values + i, n - i);
  return sum_lanes(acc);
}

// Rows of a width known at compile time: the compiler unrolls each row and
// overlaps the rows' dependent adds.
template <int64_t kCols, typename S>
inline void sum_narrow_rows(const S* values, int64_t rows, S* out) {
  for (int64_t r = 0; r < rows; ++r) {
    S total = values[r * kCols];
    for (int64_t c = 1; c < kCols; ++c) total += values[r * kCols + c];
    out[r] = total;
  }
}

template <typename S, int64_t... kWidths>
inline bool sum_narrow_rows(const S* values, int64_t rows, int64_t cols, S* out,
                            std::integer_sequence<int64_t, kWidths...>) {
  return ((cols == kWidths + 2 && (sum_narrow_rows<kWidths + 2>(values, rows, out), true)) || ...);
}

// out[r] = the sum of row r of rows x cols consecutive values, for short rows
// (event_dims=1 with a small latent, for example): widths 2 to 31 unrolled
// (a vector and a masked one, then adding 16 lanes, cost more at these widths),
// wider rows summed in vectors.
template <typename S>
inline void sum_rows(const S* values, int64_t rows, int64_t cols, S* out) {
  if (sum_narrow_rows(values, rows, cols, out, std::make_integer_sequence<int64_t, 30>{})) return;
  for (int64_t r = 0; r < rows; ++r) out[r] = sum_of(values + r * cols, cols);
}

// per_row[r] of each of the block's elements, padded with zeros: the upstream
// gradient of a row op, one value per row, as a vector per element.
template <typename S>
inline const S* per_row_values(const S* per_row, const RowBlock& block, int64_t cols, S* buf) {
  if (block.rows == 1) {
    std::fill(buf, buf + vec_padded<S>(block.n), per_row[block.row]);
    return buf;
  }
  // One element per row (event_dims=0): the values themselves.
  if (cols == 1) return load_block(per_row + block.row, block.n, buf);
  for (int64_t r = 0; r < block.rows; ++r) std::fill(buf + r * cols, buf + (r + 1) * cols, per_row[block.row + r]);
  std::fill(buf + block.n, buf + vec_padded<S>(block.n), S(0));
  return buf;
}

// Calls fn(block) for every block of rows x cols (RowBlock), in parallel.
template <typename Fn>
void for_each_block(int64_t rows, int64_t cols, const Fn& fn) {
  if (rows == 0 || cols == 0) return;
  if (cols < kBlock) {
    // As many whole rows as fit, rounded down to a whole number of float
    // vectors where that leaves at least one, so the block is read in place
    // rather than copied (load_block).
    const int64_t fit = kBlock / cols, step = Vec<float>::size() / std::gcd(cols, Vec<float>::size());
    const int64_t per_block = fit >= step ? fit / step * step : fit;
    const int64_t blocks = (rows + per_block - 1) / per_block;
    at::parallel_for(0, blocks, std::max<int64_t>(1, kGrain / kBlock), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t row = b * per_block, count = std::min(per_block, rows - row);
        fn(RowBlock{row, count, 0, count * cols});
      }
    });
    return;
  }
  const int64_t blocks_per_row = (cols + kBlock - 1) / kBlock;
  at::parallel_for(0, rows * blocks_per_row, std::max<int64_t>(1, kGrain / kBlock), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / blocks_per_row, col = (task % blocks_per_row) * kBlock;
      fn(RowBlock{row, 1, col, std::min(kBlock, cols - col)});
    }
  });
}

// Calls fn(first, n) for blocks of at most kBlock consecutive elements of [0, numel), in parallel.
template <typename Fn>
void for_each_flat_block(int64_t numel, const Fn& fn) {
  for_each_block(1, numel, [&](const RowBlock& block) { fn(block.col, block.n); });
}

// out[r] = sum over row r of rows x cols of per-element terms. block_terms(block,
// emit) computes the terms of a block (RowBlock) a vector at a time and calls
// emit(i, v) with the vector v of the terms of elements [i, i + W), i = 0, W,
// ... < block.n (lanes past n are ignored). Long rows are summed in vectors,
// chunk by chunk (kChunk columns per parallel task, chunks added in order);
// short rows have their terms summed row by row in order. Results do not
// depend on the number of threads.
template <typename S, typename BlockTerms>
void row_sums(int64_t rows, int64_t cols, S* out, const BlockTerms& block_terms) {
  if (rows == 0) return;
  if (cols == 0) {
    std::fill(out, out + rows, S(0));
    return;
  }
  if (cols < kBlock) {
    for_each_block(rows, cols, [&](const RowBlock& block) {
      if (cols == 1) {
        // One element per row: the terms are the sums.
        block_terms(block, [&](int64_t i, const Vec<S>& v) {
          v.store(out + block.row + i, static_cast<int>(std::min<int64_t>(Vec<S>::size(), block.n - i)));
        });
        return;
      }
      alignas(64) S terms[kBlock + Vec<S>::size()];
      block_terms(block, [&](int64_t i, const Vec<S>& v) { v.store(terms + i); });
      sum_rows(terms, block.rows, cols, out + block.row);
    });
    return;
  }
  const int64_t chunks = (cols + kChunk - 1) / kChunk;
  auto chunk_sum = [&](int64_t r, int64_t chunk) {
    Vec<S> acc(S(0));
    const int64_t end = std::min(cols, (chunk + 1) * kChunk);
    for (int64_t c0 = chunk * kChunk; c0 < end; c0 += kBlock) {
      const int64_t n = std::min(kBlock, end - c0);
      block_terms(RowBlock{r, 1, c0, n}, [&](int64_t i, const Vec<S>& v) { acc = acc + first_lanes(v, n - i); });
    }
    return sum_lanes(acc);
  };
  const int64_t grain = std::max<int64_t>(1, kGrain / std::min(cols, kChunk));
  if (chunks == 1) {
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) out[r] = chunk_sum(r, 0);
    });
    return;
  }
  std::vector<S> partial(rows * chunks);
  at::parallel_for(0, rows * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) partial[task] = chunk_sum(task / chunks, task % chunks);
  });
  for (int64_t r = 0; r < rows; ++r) {
    S total = S(0);
    for (int64_t chunk = 0; chunk < chunks; ++chunk) total += partial[r * chunks + chunk];
    out[r] = total;
  }
}

// ------------------------------------------------------------------- noise

// The seed and base counter offset of one call, as kept for backward.
struct PhiloxState {
  uint64_t seed;
  uint64_t offset;
};

// Draws a fresh 64-bit seed from the CPU generator (the default one unless
// given); the base offset is 0 (design.md, "The noise stream").
inline PhiloxState next_cpu_philox_state(const std::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return {gen->random64(), 0};
}

// int64 tensor [seed, offset]: the op's rng_state output.
inline at::Tensor philox_state_tensor(const PhiloxState& state) {
  at::Tensor t = at::empty({2}, at::TensorOptions().dtype(at::kLong));
  t.data_ptr<int64_t>()[0] = static_cast<int64_t>(state.seed);
  t.data_ptr<int64_t>()[1] = static_cast<int64_t>(state.offset);
  return t;
}

inline PhiloxState philox_state_from_tensor(const at::Tensor& rng_state) {
  TORCH_CHECK(rng_state.scalar_type() == at::kLong && rng_state.numel() == 2,
              "fastgen: rng_state must be an int64 tensor [seed, offset], got ",
              rng_state.scalar_type(), " with ", rng_state.numel(), " elements");
  const at::Tensor host = rng_state.contiguous();
  return {static_cast<uint64_t>(host.const_data_ptr<int64_t>()[0]),
          static_cast<uint64_t>(host.const_data_ptr<int64_t>()[1])};
}

// Writes elements [first, first + n) of the stream (n <= kBlock) to eps:
// Philox counters for the covering groups of four, then Box-Muller on SIMD
// lanes, then the lanes in element order.
inline void normal_block(const PhiloxState& state, int64_t first, int64_t n, float* eps) {
  constexpr int64_t kMaxGroups = vec_padded<float>(kBlock / 4 + 1);
  alignas(64) float uniform[4][kMaxGroups];
  alignas(64) float normal[4][kMaxGroups];
  const int64_t first_group = first / 4;
  const int64_t groups = (first + n - 1) / 4 - first_group + 1;
  // Philox round by round over the counters (structure of arrays), which the
  // compiler vectorizes across counters.
  alignas(64) uint32_t words[4][kMaxGroups];
  for (int64_t g = 0; g < groups; ++g) {
    philox_counter(state.offset + first_group + g, words[0][g], words[1][g], words[2][g], words[3][g]);
  }
  for (int round = 0; round < kPhiloxRounds; ++round) {
    uint32_t k0, k1;
    philox_round_key(state.seed, round, &k0, &k1);
    for (int64_t g = 0; g < groups; ++g) philox_round(words[0][g], words[1][g], words[2][g], words[3][g], k0, k1);
  }
  for (int lane = 0; lane < 4; ++lane) {
    for (int64_t g = 0; g < groups; ++g) uniform[lane][g] = uint32_to_uniform(words[lane][g]);
    // The padding lanes of the last vector are defined too: SIMD sin/cos pick
    // their range reduction for the whole vector, so garbage there (a huge or
    // NaN angle) would change the valid lanes by an ulp from call to call.
    for (int64_t g = groups; g < vec_padded<float>(groups); ++g) uniform[lane][g] = 0.0f;
  }
  for_each_vector<float>(groups, [&](int64_t g) {
    for (int pair = 0; pair < 2; ++pair) {
      Vec<float> n1, n2;
      box_muller(Vec<float>::loadu(uniform[2 * pair] + g), Vec<float>::loadu(uniform[2 * pair + 1] + g),
                 n1, n2);
      n1.store(normal[2 * pair] + g);
      n2.store(normal[2 * pair + 1] + g);
    }
  });
  // Lanes to element order (element 4g + lane is normal[lane][g]), then the
  // requested window.
  alignas(64) float interleaved[4 * kMaxGroups];
  for (int64_t g = 0; g < groups; ++g) {
    for (int lane = 0; lane < 4; ++lane) interleaved[4 * g + lane] = normal[lane][g];
  }
  std::copy_n(interleaved + (first - 4 * first_group), n, eps);
}

// As normal_block, in the compute type of the op (double ops read float noise).
template <typename opmath>
inline void normal_block_as(const PhiloxState& state, int64_t first, int64_t n, opmath* eps) {
  if constexpr (std::is_same_v<opmath, float>) {
    normal_block(state, first, n, eps);
  } else {
    alignas(64) float buf[kBlock];
    normal_block(state, first, n, buf);
    for (int64_t i = 0; i < n; ++i) eps[i] = static_cast<opmath>(buf[i]);
  }
  for (int64_t i = n; i < vec_padded<opmath>(n); ++i) eps[i] = opmath(0);
}

// ------------------------------------------------------------------- sampling

// z[k * n + j] = mu[j] + exp(logvar[j] / 2) * eps for the elements j of one
// block [j0, j0 + len) and every sample k, the block's mu and logvar given in
// the compute type: one read of them serves all samples.
template <typename scalar_t, typename opmath>
inline void sample_block(const PhiloxState& state, int64_t samples, int64_t n, int64_t j0, int64_t len,
                         const opmath* mu, const opmath* logvar, scalar_t* z) {
  alignas(64) opmath eps[kBlock], out_buf[kBlock];
  for (int64_t k = 0; k < samples; ++k) {
    normal_block_as(state, k * n + j0, len, eps);
    scalar_t* dst = z + k * n + j0;
    opmath* out = output_block(dst, len, out_buf);
    for_each_vector<opmath>(len, [&](int64_t i) {
      reparameterize_sample(Vec<opmath>::loadu(mu + i), Vec<opmath>::loadu(logvar + i), Vec<opmath>::loadu(eps + i))
          .store(out + i);
    });
    store_block(dst, out, len);
  }
}

// Every block of the samples of n elements, in parallel over blocks.
template <typename scalar_t>
void sample_all(const PhiloxState& state, int64_t samples, int64_t n, const scalar_t* mu, const scalar_t* logvar,
                scalar_t* z) {
  using opmath = opmath_t<scalar_t>;
  for_each_flat_block(n, [&](int64_t j0, int64_t len) {
    alignas(64) opmath mu_buf[kBlock], logvar_buf[kBlock];
    sample_block(state, samples, n, j0, len, load_block(mu + j0, len, mu_buf), load_block(logvar + j0, len, logvar_buf),
                 z);
  });
}

}  // namespace fastgen::cpu
