// CPU kernels of grad_norm_penalty (per-row (||grad|| - center)^2: one pass
// forward, one pass backward with the saved norms) and of random_interpolate
// (the WGAN-GP interpolates, one uniform weight per sample from the stream).
#include <torch/library.h>

#include "kernel_utils.h"
#include "row_shape.h"

namespace fastgen::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor> grad_norm_penalty_cpu(const at::Tensor& grad_in, double center,
                                                         int64_t event_dims) {
  const at::Tensor grad = grad_in.contiguous();
  const RowShape shape = row_shape(grad, {}, event_dims, "grad_norm_penalty");
  const at::ScalarType sum_dtype = row_sum_dtype(grad.scalar_type());
  at::Tensor penalty = at::empty({shape.rows}, grad.options().dtype(sum_dtype));
  at::Tensor norm = at::empty({shape.rows}, grad.options().dtype(sum_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "grad_norm_penalty_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    const RowOperand<scalar_t> g(grad);
    opmath* norm_ptr = norm.data_ptr<opmath>();
    opmath* penalty_ptr = penalty.data_ptr<opmath>();
    const int64_t cols = shape.cols;
    // Sums of squares into norm, then the norms and penalties in place.
    row_sums<opmath>(shape.rows, cols, norm_ptr, [&](const RowBlock& block, auto&& emit) {
      alignas(64) opmath g_buf[kBlock];
      const opmath* gv = g.load(block, cols, g_buf);
      for_each_vector<opmath>(block.n, [&](int64_t i) {
        const Vec<opmath> v = Vec<opmath>::loadu(gv + i);
        emit(i, v * v);
      });
    });
    // Vectorized across rows: event_dims=0 makes every element a row.
    const Vec<opmath> c(static_cast<opmath>(center));
    for_each_flat_block(shape.rows, [&](int64_t first, int64_t n) {
      alignas(64) opmath s_buf[kBlock], n_buf[kBlock], p_buf[kBlock];
      const opmath* squares = load_block(norm_ptr + first, n, s_buf);
      opmath* nv = output_block(norm_ptr + first, n, n_buf);
      opmath* pv = output_block(penalty_ptr + first, n, p_buf);
      for_each_vector<opmath>(n, [&](int64_t i) {
        const Vec<opmath> row_norm = sqrt_(Vec<opmath>::loadu(squares + i));
        row_norm.store(nv + i);
        grad_norm_penalty(row_norm, c).store(pv + i);
      });
      store_block(norm_ptr + first, nv, n);
      store_block(penalty_ptr + first, pv, n);
    });
  });
  return {penalty, norm};
}

at::Tensor grad_norm_penalty_backward_cpu(const at::Tensor& grad_penalty, const at::Tensor& grad_in,
                                          const at::Tensor& norm_in, double center, int64_t event_dims) {
  const char* op = "grad_norm_penalty_backward";
  const at::Tensor grad = grad_in.contiguous();
  const RowShape shape = row_shape(grad, {}, event_dims, op);
  const at::Tensor upstream = row_grad(grad_penalty, grad.scalar_type(), shape.rows, op);
  TORCH_CHECK(norm_in.numel() == shape.rows, "fastgen.", op, ": norm has ", norm_in.numel(), " elements, expected ",
              shape.rows);
  const at::Tensor norm = norm_in.to(row_sum_dtype(grad.scalar_type())).contiguous();
  at::Tensor out = at::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "grad_norm_penalty_backward_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    // The per-row factor 2 g_r (||g|| - c) / ||g|| (vectorized across rows, padded to whole
    // vectors), then one pass over grad.
    std::vector<opmath> scale(vec_padded<opmath>(shape.rows));
    const opmath* up = upstream.const_data_ptr<opmath>();
    const opmath* norm_ptr = norm.const_data_ptr<opmath>();
    const Vec<opmath> c(static_cast<opmath>(center));
    for_each_flat_block(shape.rows, [&](int64_t first, int64_t n) {
      alignas(64) opmath n_buf[kBlock], u_buf[kBlock];
      const opmath* nv = load_block(norm_ptr + first, n, n_buf);
      const opmath* uv = load_block(up + first, n, u_buf);
      for_each_vector<opmath>(n, [&](int64_t i) {
        grad_norm_penalty_scale(Vec<opmath>::loadu(nv + i), c, Vec<opmath>::loadu(uv + i))
            .store(scale.data() + first + i);
      });
    });
    const RowOperand<scalar_t> g(grad);
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    const int64_t cols = shape.cols;
    for_each_block(shape.rows, cols, [&](const RowBlock& block) {
      alignas(64) opmath g_buf[kBlock], s_buf[kBlock], o_buf[kBlock];
      const int64_t first = block.first(cols);
      const opmath* gv = g.load(block, cols, g_buf);
      opmath* ov = output_block(out_ptr + first, block.n, o_buf);
      if (block.rows == 1) {
        const Vec<opmath> s(scale[block.row]);
        for_each_vector<opmath>(block.n, [&](int64_t i) { (s * Vec<opmath>::loadu(gv + i)).store(ov + i); });
      } else {
        const opmath* sv = per_row_values(scale.data(), block, cols, s_buf);
        for_each_vector<opmath>(block.n, [&](int64_t i) {
          (Vec<opmath>::loadu(sv + i) * Vec<opmath>::loadu(gv + i)).store(ov + i);
        });
      }
      store_block(out_ptr + first, ov, block.n);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> random_interpolate_cpu(const at::Tensor& real_in, const at::Tensor& fake_in,
                                                          std::optional<at::Generator> generator) {
  TORCH_CHECK(real_in.sizes() == fake_in.sizes() && real_in.scalar_type() == fake_in.scalar_type(),
              "fastgen.random_interpolate: real and fake must share shape and dtype");
  const at::Tensor real = real_in.contiguous();
  const at::Tensor fake = fake_in.contiguous();
  // Samples along dim 0 (a 0-dim tensor is one sample).
  const int64_t rows = real.dim() > 0 ? real.size(0) : 1;
  const int64_t cols = rows > 0 ? real.numel() / rows : 0;
  const PhiloxState state = next_cpu_philox_state(generator);
  at::Tensor weights = at::empty({rows}, real.options().dtype(at::kFloat));
  float* w_ptr = weights.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) w_ptr[r] = philox_uniform(state.seed, state.offset + static_cast<uint64_t>(r));
  at::Tensor out = at::empty_like(real);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "random_interpolate_cpu", [&] {
    using opmath = opmath_t<scalar_t>;
    const std::vector<opmath> w(w_ptr, w_ptr + rows);
    const scalar_t* real_ptr = real.const_data_ptr<scalar_t>();
    const scalar_t* fake_ptr = fake.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    for_each_block(rows, cols, [&](const RowBlock& block) {
      alignas(64) opmath r_buf[kBlock], f_buf[kBlock], w_buf[kBlock], o_buf[kBlock];
      const int64_t first = block.first(cols);
      const opmath* rv = load_block(real_ptr + first, block.n, r_buf);
      const opmath* fv = load_block(fake_ptr + first, block.n, f_buf);
      const opmath* wv = per_row_values(w.data(), block, cols, w_buf);
      opmath* ov = output_block(out_ptr + first, block.n, o_buf);
      for_each_vector<opmath>(block.n, [&](int64_t i) {
        interpolate(Vec<opmath>::loadu(rv + i), Vec<opmath>::loadu(fv + i), Vec<opmath>::loadu(wv + i)).store(ov + i);
      });
      store_block(out_ptr + first, ov, block.n);
    });
  });
  return {out, weights};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("_grad_norm_penalty", &grad_norm_penalty_cpu);
  m.impl("_grad_norm_penalty_backward", &grad_norm_penalty_backward_cpu);
  m.impl("_random_interpolate", &random_interpolate_cpu);
}

}  // namespace fastgen::cpu
