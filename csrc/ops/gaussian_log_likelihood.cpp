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

struct GaussianLogLikelihoodBackward : public Node {
  SavedVariable x, mean, logvar;
  int64_t event_dims = 1;
  Reduction how = Reduction::kNone;
  Kernels kernels = Kernels::kCpp;

  std::string name() const override { return "GaussianLogLikelihoodBackward"; }

  void release_variables() override {
    for (SavedVariable* v : {&x, &mean, &logvar}) v->reset_data();
  }

  variable_list apply(variable_list&& grad_outputs) override {
    // An output that no loss depends on passes no gradient: none flows back.
    if (!grad_outputs[0].defined()) return variable_list(3);
    const variable_list inputs = {x.unpack(), mean.unpack(), logvar.unpack()};
    const RowCall call = check(inputs[0], inputs[1], optional_of(inputs[2]), event_dims);
    if (call.numel() == 0) return once_differentiable(kOp, zero_grads(*this, inputs), inputs, grad_outputs);
    variable_list grads(3);
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const KernelOp<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                const at::Tensor&, const Opt&, int64_t)>
          kernel("_gaussian_log_likelihood_backward");
      const auto [grad_x, grad_logvar] =
          kernel[kernels].call(grad_per_row(grad_outputs[0], call, how), row_operand(inputs[0], call),
                               row_operand(inputs[1], call), row_operand(optional_of(inputs[2]), call), event_dims);
      if (task_should_compute_output(0)) grads[0] = fold(grad_x, call, inputs[0]);
      if (task_should_compute_output(1)) grads[1] = fold(grad_x, call, inputs[1]).neg();
      if (task_should_compute_output(2)) grads[2] = fold(grad_logvar, call, inputs[2]);
    }
    return once_differentiable(kOp, std::move(grads), inputs, grad_outputs);
  }
};

template <Kernels K>
at::Tensor gaussian_log_likelihood_autograd(const at::Tensor& x, const at::Tensor& mean, const Opt& logvar,
                                            int64_t event_dims, c10::string_view reduction) {
  at::Tensor out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = gaussian_log_likelihood<K>(x, mean, logvar, event_dims, reduction);
  }
  if (any_requires_grad({&x, &mean, logvar ? &*logvar : nullptr})) {
    auto node = make_node<GaussianLogLikelihoodBackward>();
    node->x = saved(x);
    node->mean = saved(mean);
    node->logvar = saved(logvar);
    node->event_dims = event_dims;
    node->how = parse_reduction(kOp, reduction);
    node->kernels = K;
    record(node, {out}, x, mean, logvar);
  }
  return out;
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("gaussian_log_likelihood", CompositeExplicitAutograd, gaussian_log_likelihood)
FASTGEN_IMPL_BOTH("gaussian_log_likelihood", Autograd, gaussian_log_likelihood_autograd)

}  // namespace fastgen::ops
