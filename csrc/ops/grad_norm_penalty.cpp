// grad_norm_penalty's public op (WGAN-GP's per-sample (||grad|| - center)^2)
// and random_interpolate (its interpolates, one weight per sample drawn from
// the noise stream): checks and autograd over the kernel ops of each backend.
#include "ops/op_utils.h"

namespace fastgen::ops {
namespace {

constexpr const char* kOp = "grad_norm_penalty";
constexpr const char* kInterpolate = "random_interpolate";
using Generator = std::optional<at::Generator>;

void define(torch::Library& m) {
  // (||grad||_2 - center)^2 per batch element, the norm over the last
  // event_dims dims (float32 for half inputs). Its gradient is
  // 2 (||g|| - center) g / ||g|| (0 where ||g|| = 0).
  m.def("grad_norm_penalty(Tensor grad, float center, int event_dims) -> Tensor");
  // Kernel ops: grad contiguous; penalty and norm one per row (the norm kept
  // for backward, which is then one pass over grad).
  m.def("_grad_norm_penalty(Tensor grad, float center, int event_dims) -> (Tensor penalty, Tensor norm)");
  m.def("_grad_norm_penalty_backward(Tensor grad_penalty, Tensor grad, Tensor norm, float center, int event_dims)"
        " -> Tensor grad_grad");
  // eps_i real_i + (1 - eps_i) fake_i with one eps_i in [0, 1) per sample i
  // (index along dim 0), eps_i the uniform of Philox counter offset + i of the
  // generator's stream (Triton's tl.rand(seed, offset + i)). Shapes broadcast.
  m.def("random_interpolate(Tensor real, Tensor fake, Generator? generator) -> Tensor",
        {at::Tag::nondeterministic_seeded});
  // Kernel op: real and fake contiguous, of one shape and dtype; weights the
  // float32 eps_i, one per sample.
  m.def("_random_interpolate(Tensor real, Tensor fake, Generator? generator) -> (Tensor interpolate, Tensor weights)",
        {at::Tag::nondeterministic_seeded});
}

// ------------------------------------------------------------------ grad_norm_penalty

RowCall check(const at::Tensor& grad, int64_t event_dims) {
  return check_rows(kOp, {named("grad", grad)}, event_dims);
}

using PenaltyKernel = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, int64_t);

std::tuple<at::Tensor, at::Tensor> penalty_and_norm(Kernels kernels, const RowCall& call, const at::Tensor& grad,
                                                    double center) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const KernelOp<PenaltyKernel> kernel("_grad_norm_penalty");
  return kernel[kernels].call(row_operand(grad, call), center, call.event_dims);
}

template <Kernels K>
at::Tensor grad_norm_penalty(const at::Tensor& grad, double center, int64_t event_dims) {
  const RowCall call = check(grad, event_dims);
  return finish_rows(std::get<0>(penalty_and_norm(K, call, grad, center)), call, Reduction::kNone);
}

struct GradNormPenaltyBackward : public Node {
  SavedVariable grad, norm;
  double center = 1.0;
  int64_t event_dims = 1;
  Kernels kernels = Kernels::kCpp;

  std::string name() const override { return "GradNormPenaltyBackward"; }

  void release_variables() override {
    grad.reset_data();
    norm.reset_data();
  }

  variable_list apply(variable_list&& grad_outputs) override {
    // An output that no loss depends on passes no gradient: none flows back.
    if (!grad_outputs[0].defined()) return variable_list(1);
    const variable_list inputs = {grad.unpack(), norm.unpack()};
    const RowCall call = check(inputs[0], event_dims);
    variable_list grads(1);
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const KernelOp<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, int64_t)>
          kernel("_grad_norm_penalty_backward");
      const at::Tensor grad_grad = kernel[kernels].call(grad_per_row(grad_outputs[0], call, Reduction::kNone),
                                                        row_operand(inputs[0], call), inputs[1], center, event_dims);
      grads[0] = fold(grad_grad, call, inputs[0]);
    }
    // Its result flows on into grad's own graph (a critic's create_graph=True
    // gradient), which autograd differentiates; only differentiating this
    // gradient again (backward(create_graph=True) through the penalty) is refused.
    return once_differentiable(kOp, std::move(grads), inputs, grad_outputs);
  }
};

template <Kernels K>
at::Tensor grad_norm_penalty_autograd(const at::Tensor& grad, double center, int64_t event_dims) {
  if (!any_requires_grad({&grad})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return grad_norm_penalty<K>(grad, center, event_dims);
  }
  at::Tensor penalty, norm;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const RowCall call = check(grad, event_dims);
    std::tie(penalty, norm) = penalty_and_norm(K, call, grad, center);
    penalty = finish_rows(penalty, call, Reduction::kNone);
  }
  auto node = make_node<GradNormPenaltyBackward>();
  node->grad = saved(grad);
  node->norm = saved(norm);
  node->center = center;
  node->event_dims = event_dims;
  node->kernels = K;
  record(node, {penalty}, grad);
  return penalty;
}

// ------------------------------------------------------------------ random_interpolate

Operands check_interpolate(const at::Tensor& real, const at::Tensor& fake, const Generator& generator) {
  const Operands operands = check_operands(kInterpolate, {named("real", real), named("fake", fake)});
  check_generator(kInterpolate, generator, operands.device);
  return operands;
}

std::tuple<at::Tensor, at::Tensor> interpolate(Kernels kernels, const Operands& operands, const at::Tensor& real,
                                               const at::Tensor& fake, const Generator& generator) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const KernelOp<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, Generator)> kernel(
      "_random_interpolate");
  return kernel[kernels].call(full_operand(real, operands.shape, operands.dtype),
                              full_operand(fake, operands.shape, operands.dtype), generator);
}

template <Kernels K>
at::Tensor random_interpolate(const at::Tensor& real, const at::Tensor& fake, Generator generator) {
  const Operands operands = check_interpolate(real, fake, generator);
  return std::get<0>(interpolate(K, operands, real, fake, generator));
}

// d/d real = eps_i g, d/d fake = (1 - eps_i) g: linear in g with the saved
// weights (one per sample) constant, so these torch ops differentiate again correctly.
struct RandomInterpolateBackward : public Node {
  SavedVariable weights;
  std::vector<int64_t> real_shape, fake_shape;
  at::ScalarType real_dtype = at::kFloat, fake_dtype = at::kFloat;

  std::string name() const override { return "RandomInterpolateBackward"; }

  void release_variables() override { weights.reset_data(); }

  variable_list apply(variable_list&& grad_outputs) override {
    const at::Tensor& g = grad_outputs[0];
    if (!g.defined()) return variable_list(2);
    // One weight per sample, broadcast over the sample's other dims.
    std::vector<int64_t> shape(std::max<int64_t>(g.dim(), 1), 1);
    if (g.dim() > 0) shape[0] = g.size(0);
    const at::Tensor w = weights.unpack().to(g.scalar_type()).view(shape);
    variable_list grads(2);
    if (task_should_compute_output(0)) grads[0] = fold_to(g * w, real_shape, real_dtype);
    if (task_should_compute_output(1)) grads[1] = fold_to(g * (1 - w), fake_shape, fake_dtype);
    return grads;
  }
};

template <Kernels K>
at::Tensor random_interpolate_autograd(const at::Tensor& real, const at::Tensor& fake, Generator generator) {
  if (!any_requires_grad({&real, &fake})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return random_interpolate<K>(real, fake, generator);
  }
  const Operands operands = check_interpolate(real, fake, generator);
  at::Tensor out, weights;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    std::tie(out, weights) = interpolate(K, operands, real, fake, generator);
  }
  auto node = make_node<RandomInterpolateBackward>();
  node->weights = saved(weights);
  node->real_shape = real.sizes().vec();
  node->fake_shape = fake.sizes().vec();
  node->real_dtype = real.scalar_type();
  node->fake_dtype = fake.scalar_type();
  record(node, {out}, real, fake);
  return out;
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("grad_norm_penalty", CompositeExplicitAutograd, grad_norm_penalty)
FASTGEN_IMPL_BOTH("grad_norm_penalty", Autograd, grad_norm_penalty_autograd)
FASTGEN_IMPL_BOTH("random_interpolate", CompositeExplicitAutograd, random_interpolate)
FASTGEN_IMPL_BOTH("random_interpolate", Autograd, random_interpolate_autograd)

}  // namespace fastgen::ops
