// CPU kernel of clamp_: every tensor of a list clamped in place, the list cut
// into fixed-size chunks spread over the threads in one parallel region.
#include <torch/library.h>

#include "kernel_utils.h"

namespace fastgen::cpu {
namespace {

// v in scalar_t, infinite beyond its range: a bound past the dtype's largest
// value (1e5 for float16) clamps nothing on that side.
template <typename scalar_t>
scalar_t saturated_cast(double v) {
  using limits = std::numeric_limits<scalar_t>;
  if (v > static_cast<double>(limits::max())) return limits::infinity();
  if (v < static_cast<double>(limits::lowest())) return -limits::infinity();
  return static_cast<scalar_t>(v);
}

struct ClampChunk {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

void clamp_cpu(at::TensorList tensors, double min_value, double max_value) {
  TORCH_CHECK(min_value <= max_value, "fastgen.clamp_: min (", min_value, ") must not exceed max (", max_value, ")");
  if (tensors.empty()) return;
  const at::ScalarType dtype = tensors[0].scalar_type();
  std::vector<ClampChunk> chunks;
  for (int64_t t = 0; t < static_cast<int64_t>(tensors.size()); ++t) {
    const at::Tensor& tensor = tensors[t];
    TORCH_CHECK(tensor.scalar_type() == dtype && tensor.device().is_cpu(),
                "fastgen.clamp_: every tensor of a group must share one dtype and the CPU; tensor ", t, " is ",
                tensor.scalar_type(), " on ", tensor.device());
    TORCH_CHECK(tensor.is_contiguous() || tensor.numel() == 0, "fastgen.clamp_: tensor ", t,
                " must be contiguous (the clamp_ op passes contiguous copies of other layouts)");
    for (int64_t begin = 0; begin < tensor.numel(); begin += kGrain) {
      chunks.push_back({t, begin, std::min(tensor.numel(), begin + kGrain)});
    }
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "clamp_cpu", [&] {
    const scalar_t low_value = saturated_cast<scalar_t>(min_value), high_value = saturated_cast<scalar_t>(max_value);
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t first, int64_t last) {
      // Bounds and loop ends in locals, and data __restrict: otherwise the
      // stores through data could alias them for all the compiler knows, and
      // it reloads them for every vector.
      const Vec<scalar_t> low(low_value), high(high_value);
      constexpr int64_t W = Vec<scalar_t>::size();
      for (int64_t c = first; c < last; ++c) {
        scalar_t* __restrict const data = tensors[chunks[c].tensor].data_ptr<scalar_t>();
        const int64_t end = chunks[c].end;
        int64_t i = chunks[c].begin;
        if constexpr (std::is_floating_point_v<scalar_t>) {
          // float and double: a plain loop that the compiler vectorizes with
          // the bounds in registers (max/min keep NaN as clamp does).
          for (; i < end; ++i) {
            const scalar_t v = data[i] < low_value ? low_value : data[i];
            data[i] = high_value < v ? high_value : v;
          }
        } else {
          for (; i + W <= end; i += W) at::vec::clamp(Vec<scalar_t>::loadu(data + i), low, high).store(data + i);
          if (i < end) at::vec::clamp(Vec<scalar_t>::loadu(data + i, end - i), low, high).store(data + i, end - i);
        }
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) { m.impl("_clamp_", &clamp_cpu); }

}  // namespace fastgen::cpu
