// bernoulli_log_likelihood's public op: checks, broadcasting, reduction and
// autograd over the kernel ops _bernoulli_log_likelihood(_backward).
#include "ops/op_utils.h"

namespace fastgen::ops {
namespace {

constexpr const char* kOp = "bernoulli_log_likelihood";

void define(torch::Library& m) {
  // sum(target * logits - softplus(logits)) over the last event_dims dims:
  // log Bernoulli(target; sigmoid(logits)), soft targets allowed.
  m.def("bernoulli_log_likelihood(Tensor logits, Tensor target, int event_dims, str reduction) -> Tensor");
  // Kernel ops (csrc/row_shape.h); grad_target is empty unless target_grad.
  m.def("_bernoulli_log_likelihood(Tensor logits, Tensor target, int event_dims) -> Tensor");
  m.def("_bernoulli_log_likelihood_backward(Tensor grad, Tensor logits, Tensor target, int event_dims,"
        " bool target_grad) -> (Tensor grad_logits, Tensor grad_target)");
}

RowCall check(const at::Tensor& logits, const at::Tensor& target, int64_t event_dims) {
  return check_rows(kOp, {named("logits", logits), named("target", target)}, event_dims);
}

at::Tensor per_row(Kernels kernels, const RowCall& call, const at::Tensor& logits, const at::Tensor& target) {
  if (call.numel() == 0) return at::zeros({call.rows()}, logits.options().dtype(call.sum_dtype()));
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const KernelOp<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)> kernel(
      "_bernoulli_log_likelihood");
  return kernel[kernels].call(row_operand(logits, call), row_operand(target, call), call.event_dims);
}

template <Kernels K>
at::Tensor bernoulli_log_likelihood(const at::Tensor& logits, const at::Tensor& target, int64_t event_dims,
                                    c10::string_view reduction) {
  const Reduction how = parse_reduction(kOp, reduction);
  const RowCall call = check(logits, target, event_dims);
  return finish_rows(per_row(K, call, logits, target), call, how);
}

struct BernoulliLogLikelihoodBackward : public Node {
  SavedVariable logits, target;
  int64_t event_dims = 1;
  Reduction how = Reduction::kNone;
  Kernels kernels = Kernels::kCpp;

  std::string name() const override { return "BernoulliLogLikelihoodBackward"; }

  void release_variables() override {
    logits.reset_data();
    target.reset_data();
  }

  variable_list apply(variable_list&& grad_outputs) override {
    // An output that no loss depends on passes no gradient: none flows back.
    if (!grad_outputs[0].defined()) return variable_list(2);
    const variable_list inputs = {logits.unpack(), target.unpack()};
    const RowCall call = check(inputs[0], inputs[1], event_dims);
    if (call.numel() == 0) return once_differentiable(kOp, zero_grads(*this, inputs), inputs, grad_outputs);
    variable_list grads(2);
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const KernelOp<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                const at::Tensor&, int64_t, bool)>
          kernel("_bernoulli_log_likelihood_backward");
      const bool want_target = task_should_compute_output(1);
      const auto [grad_logits, grad_target] =
          kernel[kernels].call(grad_per_row(grad_outputs[0], call, how), row_operand(inputs[0], call),
                               row_operand(inputs[1], call), event_dims, want_target);
      if (task_should_compute_output(0)) grads[0] = fold(grad_logits, call, inputs[0]);
      if (want_target) grads[1] = fold(grad_target, call, inputs[1]);
    }
    return once_differentiable(kOp, std::move(grads), inputs, grad_outputs);
  }
};

template <Kernels K>
at::Tensor bernoulli_log_likelihood_autograd(const at::Tensor& logits, const at::Tensor& target, int64_t event_dims,
                                             c10::string_view reduction) {
  at::Tensor out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = bernoulli_log_likelihood<K>(logits, target, event_dims, reduction);
  }
  if (any_requires_grad({&logits, &target})) {
    auto node = make_node<BernoulliLogLikelihoodBackward>();
    node->logits = saved(logits);
    node->target = saved(target);
    node->event_dims = event_dims;
    node->how = parse_reduction(kOp, reduction);
    node->kernels = K;
    record(node, {out}, logits, target);
  }
  return out;
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("bernoulli_log_likelihood", CompositeExplicitAutograd, bernoulli_log_likelihood)
FASTGEN_IMPL_BOTH("bernoulli_log_likelihood", Autograd, bernoulli_log_likelihood_autograd)

}  // namespace fastgen::ops
