// reparameterize_log_weights's public op: checks, broadcasting and autograd
// over the kernel ops _reparameterize_log_weights(_backward) of each backend.
#include "ops/op_utils.h"

namespace fastgen::ops {
namespace {

constexpr const char* kOp = "reparameterize_log_weights";
using Generator = std::optional<at::Generator>;
using Opt = std::optional<at::Tensor>;

void define(torch::Library& m) {
  // In one pass over (mu, logvar): the samples z_k of reparameterize (the same
  // z for the same generator state) and, per sample, log p(z_k) - log q(z_k|x)
  // summed over the last event_dims dims: IWAE's log-weights without the
  // decoder's term. q = N(mu, e^logvar); p = N(prior_mu, e^prior_logvar), a
  // missing half being N(0, 1)'s (mean 0, log-variance 0). Shapes broadcast;
  // log_weights has shape (num_samples, *batch) (or the batch shape), float32
  // for half inputs.
  m.def("reparameterize_log_weights(Tensor mu, Tensor logvar, Tensor? prior_mu, Tensor? prior_logvar, "
        "int? num_samples, int event_dims, Generator? generator) -> (Tensor z, Tensor log_weights)",
        {at::Tag::nondeterministic_seeded});
  // Kernel ops: mu and logvar contiguous, of the call's shape and dtype; the
  // prior in csrc/row_shape.h's row contract (repeating over rows);
  // log_weights one per row of every sample (num_samples * rows, sample-major).
  m.def("_reparameterize_log_weights(Tensor mu, Tensor logvar, Tensor? prior_mu, Tensor? prior_logvar, "
        "int? num_samples, int event_dims, Generator? generator) -> (Tensor z, Tensor log_weights, Tensor rng_state)",
        {at::Tag::nondeterministic_seeded});
  // Full-size gradients (mu.numel() elements each); those of the prior are
  // empty unless asked for (the op layer sums them down to the prior's shape).
  m.def("_reparameterize_log_weights_backward(Tensor? grad_z, Tensor? grad_log_weights, Tensor mu, Tensor logvar, "
        "Tensor? prior_mu, Tensor? prior_logvar, Tensor rng_state, int? num_samples, int event_dims, "
        "bool prior_mu_grad, bool prior_logvar_grad) "
        "-> (Tensor grad_mu, Tensor grad_logvar, Tensor grad_prior_mu, Tensor grad_prior_logvar)");
}

RowCall check(const at::Tensor& mu, const at::Tensor& logvar, const Opt& prior_mu, const Opt& prior_logvar,
              const std::optional<int64_t>& num_samples, int64_t event_dims, const Generator& generator) {
  const RowCall call = check_rows(kOp,
                                  {named("mu", mu), named("logvar", logvar), named("prior_mu", prior_mu),
                                   named("prior_logvar", prior_logvar)},
                                  event_dims);
  check_num_samples(kOp, num_samples);
  check_generator(kOp, generator, call.operands.device);
  return call;
}

// (num_samples, *batch) or the batch shape: the shape of log_weights.
std::vector<int64_t> weights_shape(const RowCall& call, const std::optional<int64_t>& num_samples) {
  std::vector<int64_t> shape;
  if (num_samples) shape.push_back(*num_samples);
  for (int64_t s : call.batch_shape()) shape.push_back(s);
  return shape;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample(Kernels kernels, const RowCall& call, const at::Tensor& mu,
                                                      const at::Tensor& logvar, const Opt& prior_mu,
                                                      const Opt& prior_logvar,
                                                      const std::optional<int64_t>& num_samples,
                                                      const Generator& generator) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const KernelOp<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const Opt&, const Opt&, std::optional<int64_t>, int64_t, Generator)>
      kernel("_reparameterize_log_weights");
  auto [z, log_weights, rng_state] =
      kernel[kernels].call(full_operand(mu, call.shape(), call.operands.dtype),
                           full_operand(logvar, call.shape(), call.operands.dtype), row_operand(prior_mu, call),
                           row_operand(prior_logvar, call), num_samples, call.event_dims, generator);
  return {z, log_weights.view(weights_shape(call, num_samples)), rng_state};
}

template <Kernels K>
std::tuple<at::Tensor, at::Tensor> reparameterize_log_weights(const at::Tensor& mu, const at::Tensor& logvar,
                                                              const Opt& prior_mu, const Opt& prior_logvar,
                                                              std::optional<int64_t> num_samples,
                                                              int64_t event_dims, Generator generator) {
  const RowCall call = check(mu, logvar, prior_mu, prior_logvar, num_samples, event_dims, generator);
  auto [z, log_weights, rng_state] = sample(K, call, mu, logvar, prior_mu, prior_logvar, num_samples, generator);
  return {z, log_weights};
}

struct ReparameterizeLogWeightsBackward : public Node {
  SavedVariable mu, logvar, prior_mu, prior_logvar, rng_state;
  std::optional<int64_t> num_samples;
  int64_t event_dims = 1;
  Kernels kernels = Kernels::kCpp;

  std::string name() const override { return "ReparameterizeLogWeightsBackward"; }

  void release_variables() override {
    for (SavedVariable* v : {&mu, &logvar, &prior_mu, &prior_logvar, &rng_state}) v->reset_data();
  }

  variable_list apply(variable_list&& grad_outputs) override {
    // An output that no loss depends on passes no gradient: none flows back.
    if (!grad_outputs[0].defined() && !grad_outputs[1].defined()) return variable_list(4);
    const variable_list inputs = {mu.unpack(), logvar.unpack(), prior_mu.unpack(), prior_logvar.unpack(),
                                  rng_state.unpack()};
    const Opt pm = optional_of(inputs[2]), plv = optional_of(inputs[3]);
    const RowCall call = check_rows(kOp,
                                    {named("mu", inputs[0]), named("logvar", inputs[1]), named("prior_mu", pm),
                                     named("prior_logvar", plv)},
                                    event_dims);
    variable_list grads(4);
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const KernelOp<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
          const Opt&, const Opt&, const at::Tensor&, const at::Tensor&, const Opt&, const Opt&, const at::Tensor&,
          std::optional<int64_t>, int64_t, bool, bool)>
          kernel("_reparameterize_log_weights_backward");
      const at::Tensor& grad_w = grad_outputs[1];
      const int64_t weights = call.rows() * num_samples.value_or(1);
      const bool want_pm = task_should_compute_output(2), want_plv = task_should_compute_output(3);
      auto [grad_mu, grad_logvar, grad_pm, grad_plv] = kernel[kernels].call(
          optional_of(grad_outputs[0]),
          grad_w.defined() ? Opt(grad_w.to(call.sum_dtype()).reshape({weights}).contiguous()) : std::nullopt,
          full_operand(inputs[0], call.shape(), call.operands.dtype),
          full_operand(inputs[1], call.shape(), call.operands.dtype), row_operand(pm, call), row_operand(plv, call),
          inputs[4], num_samples, event_dims, want_pm, want_plv);
      if (task_should_compute_output(0)) grads[0] = fold(grad_mu, call, inputs[0]);
      if (task_should_compute_output(1)) grads[1] = fold(grad_logvar, call, inputs[1]);
      if (want_pm) grads[2] = fold(grad_pm, call, inputs[2]);
      if (want_plv) grads[3] = fold(grad_plv, call, inputs[3]);
    }
    return once_differentiable(kOp, std::move(grads), inputs, grad_outputs);
  }
};

template <Kernels K>
std::tuple<at::Tensor, at::Tensor> reparameterize_log_weights_autograd(
    const at::Tensor& mu, const at::Tensor& logvar, const Opt& prior_mu, const Opt& prior_logvar,
    std::optional<int64_t> num_samples, int64_t event_dims, Generator generator) {
  if (!any_requires_grad({&mu, &logvar, prior_mu ? &*prior_mu : nullptr, prior_logvar ? &*prior_logvar : nullptr})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return reparameterize_log_weights<K>(mu, logvar, prior_mu, prior_logvar, num_samples, event_dims, generator);
  }
  at::Tensor z, log_weights, rng_state;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const RowCall call = check(mu, logvar, prior_mu, prior_logvar, num_samples, event_dims, generator);
    std::tie(z, log_weights, rng_state) =
        sample(K, call, mu, logvar, prior_mu, prior_logvar, num_samples, generator);
  }
  auto node = make_node<ReparameterizeLogWeightsBackward>();
  node->mu = saved(mu);
  node->logvar = saved(logvar);
  node->prior_mu = saved(prior_mu);
  node->prior_logvar = saved(prior_logvar);
  node->rng_state = saved(rng_state);
  node->num_samples = num_samples;
  node->event_dims = event_dims;
  node->kernels = K;
  record(node, {z, log_weights}, mu, logvar, prior_mu, prior_logvar);
  return {z, log_weights};
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("reparameterize_log_weights", CompositeExplicitAutograd, reparameterize_log_weights)
FASTGEN_IMPL_BOTH("reparameterize_log_weights", Autograd, reparameterize_log_weights_autograd)

}  // namespace fastgen::ops
