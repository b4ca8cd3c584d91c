// gaussian_log_likelihood's public op: checks, broadcasting, reduction and
// autograd over the kernel ops _gaussian_log_likelihood(_backward).
#include "ops/op_utils.h"

namespace fastgen::ops {
namespace {

constexpr const char* kOp = "gaussian_log_likelihood";
using Opt = std::optional<at::Tensor>;

void define(torch::Library& m) {
  // log N(x; mean, e^logvar) summed over the last event_dims dims; no logvar
  // means unit variance.
  m.def("gaussian_log_likelihood(Tensor x, Tensor mean, Tensor? logvar, int event_dims, str reduction) -> Tensor");
  // Kernel ops (csrc/row_shape.h). The mean's gradient is -grad_x;
  // grad_logvar is empty without logvar.
  m.def("_gaussian_log_likelihood(Tensor x, Tensor mean, Tensor? logvar, int event_dims) -> Tensor");
  m.def("_gaussian_log_likelihood_backward(Tensor grad, Tensor x, Tensor mean, Tensor? logvar, int event_dims)"
        " -> (Tensor grad_x, Tensor grad_logvar)");
}

RowCall check(const at::Tensor& x, const at::Tensor& mean, const Opt& logvar, int64_t event_dims) {
  return check_rows(kOp, {named("x", x), named("mean", mean), named("logvar", logvar)}, event_dims);
}

at::Tensor per_row(Kernels kernels, const RowCall& call, const at::Tensor& x, const at::Tensor& mean,
                   const Opt& logvar) {
  if (call.numel() == 0) return at::zeros({call.rows()}, x.options().dtype(call.sum_dtype()));
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const KernelOp<at::Tensor(const at::Tensor&, const at::Tensor&, const Opt&, int64_t)> kernel(
      "_gaussian_log_likelihood");
  return kernel[kernels].call(row_operand(x, call), row_operand(mean, call), row_operand(logvar, call), call.event_dims);
}

template <Kernels K>
at::Tensor gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& mean, const Opt& logvar, int64_t event_dims,
                                   c10::string_view reduction) {
  const Reduction how = parse_reduction(kOp, reduction);
  const RowCall call = check(x, mean, logvar, event_dims);
  return finish_rows(per_row(K, call, x, mean, logvar), call, how);
}

struct GaussianLogLikelihoodBackward : public torch::autograd::Function<GaussianLogLikelihoodBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& mean, const Opt& logvar,
                            int64_t event_dims, Reduction how, Kernels kernels) {
    const RowCall call = check(x, mean, logvar, event_dims);
    ctx->save_for_backward({x, mean, logvar.value_or(at::Tensor())});
    ctx->saved_data["event_dims"] = event_dims;
    ctx->saved_data["reduction"] = static_cast<int64_t>(how);
    ctx->saved_data["kernels"] = static_cast<int64_t>(kernels);
    return finish_rows(per_row(kernels, call, x, mean, logvar), call, how);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &mean = saved[1], &logvar = saved[2];
    const RowCall call = check(x, mean, optional_of(logvar), ctx->saved_data["event_dims"].toInt());
    const auto how = static_cast<Reduction>(ctx->saved_data["reduction"].toInt());
    const auto kernels = static_cast<Kernels>(ctx->saved_data["kernels"].toInt());
    const std::vector<bool> needs = needs_input_grads(ctx, saved);
    variable_list grads(6);
    if (call.numel() == 0) {
      for (int i = 0; i < 3; ++i) {
        if (needs[i]) grads[i] = at::zeros_like(saved[i]);
      }
      return once_differentiable(kOp, std::move(grads), saved, grad_outputs);
    }
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const KernelOp<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                const at::Tensor&, const Opt&, int64_t)>
          kernel("_gaussian_log_likelihood_backward");
      const auto [grad_x, grad_logvar] =
          kernel[kernels].call(grad_per_row(grad_outputs[0], call, how), row_operand(x, call),
                               row_operand(mean, call), row_operand(optional_of(logvar), call), call.event_dims);
      if (needs[0]) grads[0] = fold(grad_x, call, x);
      if (needs[1]) grads[1] = fold(grad_x, call, mean).neg();
      if (needs[2]) grads[2] = fold(grad_logvar, call, logvar);
    }
    return once_differentiable(kOp, std::move(grads), saved, grad_outputs);
  }
};

template <Kernels K>
at::Tensor gaussian_log_likelihood_autograd(const at::Tensor& x, const at::Tensor& mean, const Opt& logvar,
                                            int64_t event_dims, c10::string_view reduction) {
  if (!any_requires_grad({&x, &mean, logvar ? &*logvar : nullptr})) {
    return gaussian_log_likelihood<K>(x, mean, logvar, event_dims, reduction);
  }
  return GaussianLogLikelihoodBackward::apply(x, mean, logvar, event_dims, parse_reduction(kOp, reduction), K);
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("gaussian_log_likelihood", CompositeExplicitAutograd, gaussian_log_likelihood)
FASTGEN_IMPL_BOTH("gaussian_log_likelihood", Autograd, gaussian_log_likelihood_autograd)

}  // namespace fastgen::ops
