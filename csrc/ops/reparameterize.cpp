// reparameterize's public op: checks, broadcasting and autograd over the
// kernel ops _reparameterize / _reparameterize_backward of each backend, and
// the raw noise stream philox_normal_.
#include "ops/op_utils.h"

namespace fastgen::ops {
namespace {

constexpr const char* kOp = "reparameterize";

void define(torch::Library& m) {
  // z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) drawn in the kernel from the
  // generator's stream (design.md); shape (num_samples, *shape) when given.
  m.def("reparameterize(Tensor mu, Tensor logvar, int? num_samples, Generator? generator) -> Tensor",
        {at::Tag::nondeterministic_seeded});
  // Kernel ops: mu and logvar contiguous, of one shape and dtype. rng_state =
  // int64 [seed, offset] lets backward regenerate eps.
  m.def("_reparameterize(Tensor mu, Tensor logvar, int? num_samples, Generator? generator)"
        " -> (Tensor z, Tensor rng_state)",
        {at::Tag::nondeterministic_seeded});
  m.def("_reparameterize_backward(Tensor grad_z, Tensor logvar, Tensor rng_state, int? num_samples)"
        " -> Tensor grad_logvar");
  // Fills a float32 tensor with elements [0, numel) of the stream (seed, offset).
  m.def("philox_normal_(Tensor(a!) out, int seed, int offset) -> Tensor(a!)");
  // The noise stream of a call drawing `elements` normals on like's device:
  // int64 [seed, offset] on that device, taken from its generator (the
  // default one unless given) as the C++ kernels take it, the generator
  // advanced past the counters used. Every backend (the Triton kernels and
  // the reference too) draws through it, so one generator state gives one
  // stream everywhere. On CUDA it is written on the device, so a captured
  // CUDA graph draws a fresh stream on every replay.
  m.def("philox_state(Tensor like, Generator? generator, int elements) -> Tensor rng_state",
        {at::Tag::nondeterministic_seeded});
}

using Generator = std::optional<at::Generator>;

Operands check(const at::Tensor& mu, const at::Tensor& logvar, const std::optional<int64_t>& num_samples,
               const Generator& generator) {
  const Operands operands = check_operands(kOp, {named("mu", mu), named("logvar", logvar)});
  check_num_samples(kOp, num_samples);
  check_generator(kOp, generator, operands.device);
  return operands;
}

std::tuple<at::Tensor, at::Tensor> sample(Kernels kernels, const Operands& operands, const at::Tensor& mu,
                                          const at::Tensor& logvar, const std::optional<int64_t>& num_samples,
                                          const Generator& generator) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const KernelOp<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                           std::optional<int64_t>, Generator)>
      kernel("_reparameterize");
  return kernel[kernels].call(full_operand(mu, operands.shape, operands.dtype),
                     full_operand(logvar, operands.shape, operands.dtype), num_samples, generator);
}

template <Kernels K>
at::Tensor reparameterize(const at::Tensor& mu, const at::Tensor& logvar, std::optional<int64_t> num_samples,
                          Generator generator) {
  const Operands operands = check(mu, logvar, num_samples, generator);
  return std::get<0>(sample(K, operands, mu, logvar, num_samples, generator));
}

struct ReparameterizeBackward : public Node {
  // mu itself is not saved: its gradient is the upstream one, summed.
  SavedVariable logvar, rng_state;
  std::vector<int64_t> mu_shape, shape;
  at::ScalarType mu_dtype = at::kFloat, dtype = at::kFloat;
  std::optional<int64_t> num_samples;
  Kernels kernels = Kernels::kCpp;

  std::string name() const override { return "ReparameterizeBackward"; }

  void release_variables() override {
    logvar.reset_data();
    rng_state.reset_data();
  }

  variable_list apply(variable_list&& grad_outputs) override {
    // An output that no loss depends on passes no gradient: none flows back.
    if (!grad_outputs[0].defined()) return variable_list(2);
    const variable_list inputs = {logvar.unpack(), rng_state.unpack()};
    variable_list grads(2);
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      const at::Tensor& grad_z = grad_outputs[0];
      if (task_should_compute_output(0)) grads[0] = fold_to(num_samples ? grad_z.sum(0) : grad_z, mu_shape, mu_dtype);
      if (task_should_compute_output(1)) {
        static const KernelOp<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         std::optional<int64_t>)>
            kernel("_reparameterize_backward");
        const at::Tensor grad_logvar =
            kernel[kernels].call(grad_z, full_operand(inputs[0], shape, dtype), inputs[1], num_samples);
        grads[1] = fold_to(grad_logvar.view(shape), inputs[0].sizes(), inputs[0].scalar_type());
      }
    }
    return once_differentiable(kOp, std::move(grads), inputs, grad_outputs);
  }
};

template <Kernels K>
at::Tensor reparameterize_autograd(const at::Tensor& mu, const at::Tensor& logvar, std::optional<int64_t> num_samples,
                                   Generator generator) {
  if (!any_requires_grad({&mu, &logvar})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return reparameterize<K>(mu, logvar, num_samples, generator);
  }
  const Operands operands = check(mu, logvar, num_samples, generator);
  at::Tensor z, rng_state;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    std::tie(z, rng_state) = sample(K, operands, mu, logvar, num_samples, generator);
  }
  auto node = make_node<ReparameterizeBackward>();
  node->logvar = saved(logvar);
  node->rng_state = saved(rng_state);
  node->mu_shape = mu.sizes().vec();
  node->mu_dtype = mu.scalar_type();
  node->shape = std::vector<int64_t>(operands.shape.begin(), operands.shape.end());
  node->dtype = operands.dtype;
  node->num_samples = num_samples;
  node->kernels = K;
  record(node, {z}, mu, logvar);
  return z;
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("reparameterize", CompositeExplicitAutograd, reparameterize)
FASTGEN_IMPL_BOTH("reparameterize", Autograd, reparameterize_autograd)

}  // namespace fastgen::ops
