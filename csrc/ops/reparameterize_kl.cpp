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

struct ReparameterizeKlBackward : public Node {
  SavedVariable mu, logvar, rng_state;
  std::optional<int64_t> num_samples;
  int64_t event_dims = 1;
  Kernels kernels = Kernels::kCpp;

  std::string name() const override { return "ReparameterizeKlBackward"; }

  void release_variables() override {
    for (SavedVariable* v : {&mu, &logvar, &rng_state}) v->reset_data();
  }

  variable_list apply(variable_list&& grad_outputs) override {
    // An output that no loss depends on passes no gradient: none flows back.
    if (!grad_outputs[0].defined() && !grad_outputs[1].defined()) return variable_list(2);
    const variable_list inputs = {mu.unpack(), logvar.unpack(), rng_state.unpack()};
    const RowCall call = check_rows(kOp, {named("mu", inputs[0]), named("logvar", inputs[1])}, event_dims);
    variable_list grads(2);
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const KernelOp<std::tuple<at::Tensor, at::Tensor>(
          const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
          const at::Tensor&, std::optional<int64_t>, int64_t)>
          kernel("_reparameterize_kl_backward");
      const at::Tensor& grad_kl = grad_outputs[1];
      auto [grad_mu, grad_logvar] = kernel[kernels].call(
          optional_of(grad_outputs[0]),
          grad_kl.defined() ? std::optional<at::Tensor>(grad_per_row(grad_kl, call, Reduction::kNone))
                            : std::nullopt,
          full_operand(inputs[0], call.shape(), call.operands.dtype),
          full_operand(inputs[1], call.shape(), call.operands.dtype), inputs[2], num_samples, event_dims);
      if (task_should_compute_output(0)) grads[0] = fold(grad_mu, call, inputs[0]);
      if (task_should_compute_output(1)) grads[1] = fold(grad_logvar, call, inputs[1]);
    }
    return once_differentiable(kOp, std::move(grads), inputs, grad_outputs);
  }
};

template <Kernels K>
std::tuple<at::Tensor, at::Tensor> reparameterize_kl_autograd(const at::Tensor& mu, const at::Tensor& logvar,
                                                              std::optional<int64_t> num_samples,
                                                              int64_t event_dims, Generator generator) {
  if (!any_requires_grad({&mu, &logvar})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return reparameterize_kl<K>(mu, logvar, num_samples, event_dims, generator);
  }
  at::Tensor z, kl, rng_state;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const RowCall call = check(mu, logvar, num_samples, event_dims, generator);
    std::tie(z, kl, rng_state) = sample(K, call, mu, logvar, num_samples, generator);
  }
  auto node = make_node<ReparameterizeKlBackward>();
  node->mu = saved(mu);
  node->logvar = saved(logvar);
  node->rng_state = saved(rng_state);
  node->num_samples = num_samples;
  node->event_dims = event_dims;
  node->kernels = K;
  record(node, {z, kl}, mu, logvar);
  return {z, kl};
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("reparameterize_kl", CompositeExplicitAutograd, reparameterize_kl)
FASTGEN_IMPL_BOTH("reparameterize_kl", Autograd, reparameterize_kl_autograd)

}  // namespace fastgen::ops
