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

struct BernoulliLogLikelihoodBackward : public torch::autograd::Function<BernoulliLogLikelihoodBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& target,
                            int64_t event_dims, Reduction how, Kernels kernels) {
    const RowCall call = check(logits, target, event_dims);
    ctx->save_for_backward({logits, target});
    ctx->saved_data["event_dims"] = event_dims;
    ctx->saved_data["reduction"] = static_cast<int64_t>(how);
    ctx->saved_data["kernels"] = static_cast<int64_t>(kernels);
    return finish_rows(per_row(kernels, call, logits, target), call, how);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &logits = saved[0], &target = saved[1];
    const RowCall call = check(logits, target, ctx->saved_data["event_dims"].toInt());
    const auto how = static_cast<Reduction>(ctx->saved_data["reduction"].toInt());
    const auto kernels = static_cast<Kernels>(ctx->saved_data["kernels"].toInt());
    const std::vector<bool> needs = needs_input_grads(ctx, saved);
    variable_list grads(5);
    if (call.numel() == 0) {
      for (int i = 0; i < 2; ++i) {
        if (needs[i]) grads[i] = at::zeros_like(saved[i]);
      }
      return once_differentiable(kOp, std::move(grads), saved, grad_outputs);
    }
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const KernelOp<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                const at::Tensor&, int64_t, bool)>
          kernel("_bernoulli_log_likelihood_backward");
      const auto [grad_logits, grad_target] =
          kernel[kernels].call(grad_per_row(grad_outputs[0], call, how), row_operand(logits, call),
                               row_operand(target, call), call.event_dims, needs[1]);
      if (needs[0]) grads[0] = fold(grad_logits, call, logits);
      if (needs[1]) grads[1] = fold(grad_target, call, target);
    }
    return once_differentiable(kOp, std::move(grads), saved, grad_outputs);
  }
};

template <Kernels K>
at::Tensor bernoulli_log_likelihood_autograd(const at::Tensor& logits, const at::Tensor& target, int64_t event_dims,
                                             c10::string_view reduction) {
  if (!any_requires_grad({&logits, &target})) {
    return bernoulli_log_likelihood<K>(logits, target, event_dims, reduction);
  }
  return BernoulliLogLikelihoodBackward::apply(logits, target, event_dims, parse_reduction(kOp, reduction), K);
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("bernoulli_log_likelihood", CompositeExplicitAutograd, bernoulli_log_likelihood)
FASTGEN_IMPL_BOTH("bernoulli_log_likelihood", Autograd, bernoulli_log_likelihood_autograd)

}  // namespace fastgen::ops
