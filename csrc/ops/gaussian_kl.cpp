// gaussian_kl's public op: checks, broadcasting, reduction and autograd over
// the kernel ops _gaussian_kl / _gaussian_kl_backward of each backend.
#include "ops/op_utils.h"

namespace fastgen::ops {
namespace {

constexpr const char* kOp = "gaussian_kl";
using Opt = std::optional<at::Tensor>;

void define(torch::Library& m) {
  // KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)) summed over the last
  // event_dims dims; a missing half of the prior is N(0, 1)'s (mean 0,
  // log-variance 0). Arguments broadcast; half inputs give float32 sums.
  m.def(
      "gaussian_kl(Tensor mu, Tensor logvar, Tensor? prior_mu, Tensor? prior_logvar, int event_dims, "
      "str reduction) -> Tensor");
  // Kernel ops, on operands in csrc/row_shape.h's row contract. The prior
  // mean's gradient is -grad_mu; grad_prior_logvar is empty unless asked for.
  m.def("_gaussian_kl(Tensor mu, Tensor logvar, Tensor? prior_mu, Tensor? prior_logvar, int event_dims) -> Tensor");
  m.def(
      "_gaussian_kl_backward(Tensor grad, Tensor mu, Tensor logvar, Tensor? prior_mu, Tensor? prior_logvar, "
      "int event_dims, bool prior_logvar_grad) -> (Tensor grad_mu, Tensor grad_logvar, Tensor grad_prior_logvar)");
}

RowCall check(const at::Tensor& mu, const at::Tensor& logvar, const Opt& prior_mu, const Opt& prior_logvar,
              int64_t event_dims) {
  return check_rows(kOp,
                    {named("mu", mu), named("logvar", logvar), named("prior_mu", prior_mu),
                     named("prior_logvar", prior_logvar)},
                    event_dims);
}

at::Tensor per_row(Kernels kernels, const RowCall& call, const at::Tensor& mu, const at::Tensor& logvar,
                   const Opt& prior_mu, const Opt& prior_logvar) {
  if (call.numel() == 0) return at::zeros({call.rows()}, mu.options().dtype(call.sum_dtype()));
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const KernelOp<at::Tensor(const at::Tensor&, const at::Tensor&, const Opt&, const Opt&, int64_t)> kernel(
      "_gaussian_kl");
  return kernel[kernels].call(row_operand(mu, call), row_operand(logvar, call), row_operand(prior_mu, call),
                              row_operand(prior_logvar, call), call.event_dims);
}

template <Kernels K>
at::Tensor gaussian_kl(const at::Tensor& mu, const at::Tensor& logvar, const Opt& prior_mu, const Opt& prior_logvar,
                       int64_t event_dims, c10::string_view reduction) {
  const Reduction how = parse_reduction(kOp, reduction);
  const RowCall call = check(mu, logvar, prior_mu, prior_logvar, event_dims);
  return finish_rows(per_row(K, call, mu, logvar, prior_mu, prior_logvar), call, how);
}

struct GaussianKlBackward : public torch::autograd::Function<GaussianKlBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                            const Opt& prior_mu, const Opt& prior_logvar, int64_t event_dims, Reduction how,
                            Kernels kernels) {
    const RowCall call = check(mu, logvar, prior_mu, prior_logvar, event_dims);
    ctx->save_for_backward({mu, logvar, prior_mu.value_or(at::Tensor()), prior_logvar.value_or(at::Tensor())});
    ctx->saved_data["event_dims"] = event_dims;
    ctx->saved_data["reduction"] = static_cast<int64_t>(how);
    ctx->saved_data["kernels"] = static_cast<int64_t>(kernels);
    return finish_rows(per_row(kernels, call, mu, logvar, prior_mu, prior_logvar), call, how);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &mu = saved[0], &logvar = saved[1], &prior_mu = saved[2], &prior_logvar = saved[3];
    const RowCall call =
        check(mu, logvar, optional_of(prior_mu), optional_of(prior_logvar), ctx->saved_data["event_dims"].toInt());
    const auto how = static_cast<Reduction>(ctx->saved_data["reduction"].toInt());
    const auto kernels = static_cast<Kernels>(ctx->saved_data["kernels"].toInt());
    const std::vector<bool> needs = needs_input_grads(ctx, saved);
    variable_list grads(7);
    if (call.numel() == 0) {
      for (int i = 0; i < 4; ++i) {
        if (needs[i]) grads[i] = at::zeros_like(saved[i]);
      }
      return once_differentiable(kOp, std::move(grads), saved, grad_outputs);
    }
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const KernelOp<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
          const at::Tensor&, const at::Tensor&, const at::Tensor&, const Opt&, const Opt&, int64_t, bool)>
          kernel("_gaussian_kl_backward");
      const auto [grad_mu, grad_logvar, grad_prior_logvar] = kernel[kernels].call(
          grad_per_row(grad_outputs[0], call, how), row_operand(mu, call), row_operand(logvar, call),
          row_operand(optional_of(prior_mu), call), row_operand(optional_of(prior_logvar), call), call.event_dims,
          needs[3]);
      if (needs[0]) grads[0] = fold(grad_mu, call, mu);
      if (needs[1]) grads[1] = fold(grad_logvar, call, logvar);
      if (needs[2]) grads[2] = fold(grad_mu, call, prior_mu).neg();
      if (needs[3]) grads[3] = fold(grad_prior_logvar, call, prior_logvar);
    }
    return once_differentiable(kOp, std::move(grads), saved, grad_outputs);
  }
};

template <Kernels K>
at::Tensor gaussian_kl_autograd(const at::Tensor& mu, const at::Tensor& logvar, const Opt& prior_mu,
                                const Opt& prior_logvar, int64_t event_dims, c10::string_view reduction) {
  if (!any_requires_grad({&mu, &logvar, prior_mu ? &*prior_mu : nullptr, prior_logvar ? &*prior_logvar : nullptr})) {
    return gaussian_kl<K>(mu, logvar, prior_mu, prior_logvar, event_dims, reduction);
  }
  return GaussianKlBackward::apply(mu, logvar, prior_mu, prior_logvar, event_dims, parse_reduction(kOp, reduction),
                                   K);
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("gaussian_kl", CompositeExplicitAutograd, gaussian_kl)
FASTGEN_IMPL_BOTH("gaussian_kl", Autograd, gaussian_kl_autograd)

}  // namespace fastgen::ops
