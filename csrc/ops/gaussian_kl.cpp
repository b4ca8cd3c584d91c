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

struct GaussianKlBackward : public Node {
  SavedVariable mu, logvar, prior_mu, prior_logvar;
  int64_t event_dims = 1;
  Reduction how = Reduction::kNone;
  Kernels kernels = Kernels::kCpp;

  std::string name() const override { return "GaussianKlBackward"; }

  void release_variables() override {
    for (SavedVariable* v : {&mu, &logvar, &prior_mu, &prior_logvar}) v->reset_data();
  }

  variable_list apply(variable_list&& grad_outputs) override {
    // An output that no loss depends on passes no gradient: none flows back.
    if (!grad_outputs[0].defined()) return variable_list(4);
    const variable_list inputs = {mu.unpack(), logvar.unpack(), prior_mu.unpack(), prior_logvar.unpack()};
    const RowCall call = check(inputs[0], inputs[1], optional_of(inputs[2]), optional_of(inputs[3]), event_dims);
    if (call.numel() == 0) return once_differentiable(kOp, zero_grads(*this, inputs), inputs, grad_outputs);
    variable_list grads(4);
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const KernelOp<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
          const at::Tensor&, const at::Tensor&, const at::Tensor&, const Opt&, const Opt&, int64_t, bool)>
          kernel("_gaussian_kl_backward");
      const bool want_prior_logvar = task_should_compute_output(3);
      const auto [grad_mu, grad_logvar, grad_prior_logvar] = kernel[kernels].call(
          grad_per_row(grad_outputs[0], call, how), row_operand(inputs[0], call), row_operand(inputs[1], call),
          row_operand(optional_of(inputs[2]), call), row_operand(optional_of(inputs[3]), call), event_dims,
          want_prior_logvar);
      if (task_should_compute_output(0)) grads[0] = fold(grad_mu, call, inputs[0]);
      if (task_should_compute_output(1)) grads[1] = fold(grad_logvar, call, inputs[1]);
      if (task_should_compute_output(2)) grads[2] = fold(grad_mu, call, inputs[2]).neg();
      if (want_prior_logvar) grads[3] = fold(grad_prior_logvar, call, inputs[3]);
    }
    return once_differentiable(kOp, std::move(grads), inputs, grad_outputs);
  }
};

template <Kernels K>
at::Tensor gaussian_kl_autograd(const at::Tensor& mu, const at::Tensor& logvar, const Opt& prior_mu,
                                const Opt& prior_logvar, int64_t event_dims, c10::string_view reduction) {
  at::Tensor out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = gaussian_kl<K>(mu, logvar, prior_mu, prior_logvar, event_dims, reduction);
  }
  if (any_requires_grad({&mu, &logvar, prior_mu ? &*prior_mu : nullptr, prior_logvar ? &*prior_logvar : nullptr})) {
    auto node = make_node<GaussianKlBackward>();
    node->mu = saved(mu);
    node->logvar = saved(logvar);
    node->prior_mu = saved(prior_mu);
    node->prior_logvar = saved(prior_logvar);
    node->event_dims = event_dims;
    node->how = parse_reduction(kOp, reduction);
    node->kernels = K;
    record(node, {out}, mu, logvar, prior_mu, prior_logvar);
  }
  return out;
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("gaussian_kl", CompositeExplicitAutograd, gaussian_kl)
FASTGEN_IMPL_BOTH("gaussian_kl", Autograd, gaussian_kl_autograd)

}  // namespace fastgen::ops
