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

struct ReparameterizeBackward : public torch::autograd::Function<ReparameterizeBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                            std::optional<int64_t> num_samples, Generator generator, Kernels kernels) {
    const Operands operands = check(mu, logvar, num_samples, generator);
    auto [z, rng_state] = sample(kernels, operands, mu, logvar, num_samples, generator);
    // mu itself is not needed: its gradient is the upstream one, summed.
    ctx->save_for_backward({logvar, rng_state});
    ctx->saved_data["mu_shape"] = mu.sizes();
    ctx->saved_data["mu_dtype"] = static_cast<int64_t>(mu.scalar_type());
    ctx->saved_data["shape"] = at::IntArrayRef(operands.shape);
    ctx->saved_data["dtype"] = static_cast<int64_t>(operands.dtype);
    ctx->saved_data["num_samples"] = num_samples;
    ctx->saved_data["kernels"] = static_cast<int64_t>(kernels);
    return z;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &logvar = saved[0], &rng_state = saved[1];
    const std::optional<int64_t> num_samples = ctx->saved_data["num_samples"].toOptional<int64_t>();
    const std::vector<int64_t> shape = ctx->saved_data["shape"].toIntVector();
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    const auto kernels = static_cast<Kernels>(ctx->saved_data["kernels"].toInt());
    variable_list grads(5);
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      const at::Tensor& grad_z = grad_outputs[0];
      if (ctx->needs_input_grad(0)) {
        grads[0] = fold_to(num_samples ? grad_z.sum(0) : grad_z, ctx->saved_data["mu_shape"].toIntVector(),
                           static_cast<at::ScalarType>(ctx->saved_data["mu_dtype"].toInt()));
      }
      if (ctx->needs_input_grad(1)) {
        static const KernelOp<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         std::optional<int64_t>)>
            kernel("_reparameterize_backward");
        const at::Tensor grad_logvar =
            kernel[kernels].call(grad_z, full_operand(logvar, shape, dtype), rng_state, num_samples);
        grads[1] = fold_to(grad_logvar.view(shape), logvar.sizes(), logvar.scalar_type());
      }
    }
    return once_differentiable(kOp, std::move(grads), saved, grad_outputs);
  }
};

template <Kernels K>
at::Tensor reparameterize_autograd(const at::Tensor& mu, const at::Tensor& logvar, std::optional<int64_t> num_samples,
                                   Generator generator) {
  if (!any_requires_grad({&mu, &logvar})) {
    return reparameterize<K>(mu, logvar, num_samples, generator);
  }
  return ReparameterizeBackward::apply(mu, logvar, num_samples, generator, K);
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("reparameterize", CompositeExplicitAutograd, reparameterize)
FASTGEN_IMPL_BOTH("reparameterize", Autograd, reparameterize_autograd)

}  // namespace fastgen::ops
