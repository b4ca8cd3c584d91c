// reparameterize_kl's public op: checks, broadcasting and autograd over the
// kernel ops _reparameterize_kl / _reparameterize_kl_backward of each backend.
#include "ops/op_utils.h"

namespace fastgen::ops {
namespace {

constexpr const char* kOp = "reparameterize_kl";
using Generator = std::optional<at::Generator>;

void define(torch::Library& m) {
  // In one pass over (mu, logvar): the sample of reparameterize (the same z
  // for the same generator state) and the per-sample KL(N(mu, e^logvar) ||
  // N(0, I)) summed over the last event_dims dims (float32 for half inputs).
  m.def("reparameterize_kl(Tensor mu, Tensor logvar, int? num_samples, int event_dims, Generator? generator)"
        " -> (Tensor z, Tensor kl)",
        {at::Tag::nondeterministic_seeded});
  // Kernel ops: mu and logvar contiguous, of one shape and dtype; kl per row.
  m.def("_reparameterize_kl(Tensor mu, Tensor logvar, int? num_samples, int event_dims, Generator? generator)"
        " -> (Tensor z, Tensor kl, Tensor rng_state)",
        {at::Tag::nondeterministic_seeded});
  m.def("_reparameterize_kl_backward(Tensor? grad_z, Tensor? grad_kl, Tensor mu, Tensor logvar, Tensor rng_state,"
        " int? num_samples, int event_dims) -> (Tensor grad_mu, Tensor grad_logvar)");
}

RowCall check(const at::Tensor& mu, const at::Tensor& logvar, const std::optional<int64_t>& num_samples,
              int64_t event_dims, const Generator& generator) {
  const RowCall call = check_rows(kOp, {named("mu", mu), named("logvar", logvar)}, event_dims);
  check_num_samples(kOp, num_samples);
  check_generator(kOp, generator, call.operands.device);
  return call;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample(Kernels kernels, const RowCall& call, const at::Tensor& mu,
                                                      const at::Tensor& logvar,
                                                      const std::optional<int64_t>& num_samples,
                                                      const Generator& generator) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const KernelOp<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, std::optional<int64_t>, int64_t, Generator)>
      kernel("_reparameterize_kl");
  auto [z, kl, rng_state] = kernel[kernels].call(full_operand(mu, call.shape(), call.operands.dtype),
                                        full_operand(logvar, call.shape(), call.operands.dtype), num_samples,
                                        call.event_dims, generator);
  return {z, finish_rows(kl, call, Reduction::kNone), rng_state};
}

template <Kernels K>
std::tuple<at::Tensor, at::Tensor> reparameterize_kl(const at::Tensor& mu, const at::Tensor& logvar,
                                                     std::optional<int64_t> num_samples, int64_t event_dims,
                                                     Generator generator) {
  const RowCall call = check(mu, logvar, num_samples, event_dims, generator);
  auto [z, kl, rng_state] = sample(K, call, mu, logvar, num_samples, generator);
  return {z, kl};
}

struct ReparameterizeKlBackward : public torch::autograd::Function<ReparameterizeKlBackward> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                               std::optional<int64_t> num_samples, int64_t event_dims, Generator generator,
                               Kernels kernels) {
    const RowCall call = check(mu, logvar, num_samples, event_dims, generator);
    auto [z, kl, rng_state] = sample(kernels, call, mu, logvar, num_samples, generator);
    ctx->save_for_backward({mu, logvar, rng_state});
    ctx->saved_data["num_samples"] = num_samples;
    ctx->saved_data["event_dims"] = event_dims;
    ctx->saved_data["kernels"] = static_cast<int64_t>(kernels);
    return {z, kl};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &mu = saved[0], &logvar = saved[1], &rng_state = saved[2];
    const std::optional<int64_t> num_samples = ctx->saved_data["num_samples"].toOptional<int64_t>();
    const RowCall call =
        check_rows(kOp, {named("mu", mu), named("logvar", logvar)}, ctx->saved_data["event_dims"].toInt());
    const auto kernels = static_cast<Kernels>(ctx->saved_data["kernels"].toInt());
    const std::vector<bool> needs = needs_input_grads(ctx, {mu, logvar});
    variable_list grads(6);
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const KernelOp<std::tuple<at::Tensor, at::Tensor>(
          const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
          const at::Tensor&, std::optional<int64_t>, int64_t)>
          kernel("_reparameterize_kl_backward");
      const at::Tensor& grad_kl = grad_outputs[1];
      auto [grad_mu, grad_logvar] =
          kernel[kernels].call(optional_of(grad_outputs[0]),
                      grad_kl.defined() ? std::optional<at::Tensor>(grad_per_row(grad_kl, call, Reduction::kNone))
                                        : std::nullopt,
                      full_operand(mu, call.shape(), call.operands.dtype),
                      full_operand(logvar, call.shape(), call.operands.dtype), rng_state, num_samples,
                      call.event_dims);
      if (needs[0]) grads[0] = fold(grad_mu, call, mu);
      if (needs[1]) grads[1] = fold(grad_logvar, call, logvar);
    }
    return once_differentiable(kOp, std::move(grads), saved, grad_outputs);
  }
};

template <Kernels K>
std::tuple<at::Tensor, at::Tensor> reparameterize_kl_autograd(const at::Tensor& mu, const at::Tensor& logvar,
                                                              std::optional<int64_t> num_samples,
                                                              int64_t event_dims, Generator generator) {
  if (!any_requires_grad({&mu, &logvar})) {
    return reparameterize_kl<K>(mu, logvar, num_samples, event_dims, generator);
  }
  const variable_list outputs = ReparameterizeKlBackward::apply(mu, logvar, num_samples, event_dims, generator, K);
  return {outputs[0], outputs[1]};
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("reparameterize_kl", CompositeExplicitAutograd, reparameterize_kl)
FASTGEN_IMPL_BOTH("reparameterize_kl", Autograd, reparameterize_kl_autograd)

}  // namespace fastgen::ops
