#include "ops/op_utils.h"

#include <sstream>

namespace fastgen::ops {

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(dtype);
  }
}

std::string shape_name(at::IntArrayRef shape) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << (shape.size() == 1 ? ",)" : ")");
  return out.str();
}

bool is_fastgen_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16;
}

namespace {

std::string listing(std::initializer_list<Named> operands, bool with_shapes) {
  std::ostringstream out;
  bool first = true;
  for (const Named& n : operands) {
    if (!n.tensor) continue;
    out << (first ? "" : ", ") << n.name << " ";
    if (with_shapes) {
      out << shape_name(n.tensor->sizes());
    } else {
      out << "on " << n.tensor->device();
    }
    first = false;
  }
  return out.str();
}

}  // namespace

Operands check_operands(const char* op, std::initializer_list<Named> operands) {
  const at::Tensor* first = nullptr;
  bool same_shapes = true;
  for (const Named& n : operands) {
    if (!n.tensor) continue;
    const at::Tensor& t = *n.tensor;
    TORCH_CHECK_TYPE(t.layout() == at::kStrided, "fastgen.", op, ": ", n.name,
                     " must be a dense (strided) tensor, got layout ", t.layout());
    TORCH_CHECK_TYPE(is_fastgen_dtype(t.scalar_type()), "fastgen.", op, ": ", n.name,
                     " must be a floating tensor (float32, float64, float16 or bfloat16), got ",
                     dtype_name(t.scalar_type()));
    if (!first) {
      first = &t;
      continue;
    }
    TORCH_CHECK_VALUE(t.device() == first->device(), "fastgen.", op, ": all tensors must be on one device, got ",
                      listing(operands, false));
    same_shapes = same_shapes && t.sizes() == first->sizes();
  }
  TORCH_INTERNAL_ASSERT(first, "fastgen.", op, ": no tensor operand");
  Operands result{at::DimVector(first->sizes()), first->scalar_type(), first->device()};
  for (const Named& n : operands) {
    if (!n.tensor) continue;
    result.dtype = at::promote_types(result.dtype, n.tensor->scalar_type());
    if (!same_shapes) {
      // Broadcast as torch does: dims aligned from the right, 1 stretches.
      const at::IntArrayRef sizes = n.tensor->sizes();
      at::DimVector merged(std::max(result.shape.size(), sizes.size()), 1);
      for (size_t i = 0; i < merged.size(); ++i) {
        const int64_t a = i < result.shape.size() ? result.shape[result.shape.size() - 1 - i] : 1;
        const int64_t b = i < sizes.size() ? sizes[sizes.size() - 1 - i] : 1;
        TORCH_CHECK_VALUE(a == b || a == 1 || b == 1, "fastgen.", op, ": shapes do not broadcast: ",
                          listing(operands, true));
        merged[merged.size() - 1 - i] = a == 1 ? b : a;
      }
      result.shape = std::move(merged);
    }
  }
  return result;
}

void check_event_dims(const char* op, int64_t event_dims, int64_t ndim) {
  TORCH_CHECK_VALUE(event_dims >= 0 && event_dims <= ndim, "fastgen.", op, ": event_dims must be in [0, ", ndim,
                    "] (the number of trailing dims summed over, at most the inputs' ", ndim, " dims), got ",
                    event_dims);
}

void check_num_samples(const char* op, const std::optional<int64_t>& num_samples) {
  TORCH_CHECK_VALUE(!num_samples || *num_samples >= 1, "fastgen.", op, ": num_samples must be >= 1, got ",
                    num_samples.value_or(0));
}

void check_generator(const char* op, const std::optional<at::Generator>& generator, const at::Device& device) {
  if (!generator || !generator->defined()) return;
  TORCH_CHECK_VALUE(generator->device().type() == device.type(), "fastgen.", op, ": generator is on ",
                    generator->device(), " but the tensors are on ", device);
}

Reduction parse_reduction(const char* op, c10::string_view reduction) {
  if (reduction == "none") return Reduction::kNone;
  if (reduction == "sum") return Reduction::kSum;
  if (reduction == "mean") return Reduction::kMean;
  TORCH_CHECK_VALUE(false, "fastgen.", op, ": reduction must be one of 'none', 'sum', 'mean', got '",
                    std::string(reduction), "'");
}

RowCall check_rows(const char* op, std::initializer_list<Named> operands, int64_t event_dims) {
  RowCall call{check_operands(op, operands), event_dims};
  check_event_dims(op, event_dims, static_cast<int64_t>(call.operands.shape.size()));
  return call;
}

at::Tensor row_operand(const at::Tensor& t, const RowCall& call) {
  const at::Tensor typed = t.scalar_type() == call.operands.dtype ? t : t.to(call.operands.dtype);
  const at::IntArrayRef shape = call.shape();
  if (typed.sizes() == shape) return typed.contiguous();
  at::IntArrayRef own = typed.sizes();
  while (!own.empty() && own.front() == 1) own = own.slice(1);
  // Leading dims broadcast by repeating the data; the trailing ones the kernel
  // reads (the event dims at least) must be there in full.
  const size_t keep = std::max<size_t>(own.size(), static_cast<size_t>(call.event_dims));
  return typed.reshape(own).expand(shape.slice(shape.size() - keep)).contiguous();
}

std::optional<at::Tensor> row_operand(const std::optional<at::Tensor>& t, const RowCall& call) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  return row_operand(*t, call);
}

at::Tensor full_operand(const at::Tensor& t, at::IntArrayRef shape, at::ScalarType dtype) {
  const at::Tensor typed = t.scalar_type() == dtype ? t : t.to(dtype);
  return (typed.sizes() == shape ? typed : typed.expand(shape)).contiguous();
}

at::Tensor finish_rows(const at::Tensor& per_row, const RowCall& call, Reduction reduction) {
  const at::Tensor shaped = per_row.view(call.batch_shape());
  switch (reduction) {
    case Reduction::kSum: return shaped.sum();
    case Reduction::kMean: return shaped.mean();
    default: return shaped;
  }
}

at::Tensor grad_per_row(const at::Tensor& grad, const RowCall& call, Reduction reduction) {
  const int64_t rows = call.rows();
  switch (reduction) {
    case Reduction::kSum: return grad.to(call.sum_dtype()).expand({rows}).contiguous();
    case Reduction::kMean: return (grad.to(call.sum_dtype()) / static_cast<double>(rows)).expand({rows}).contiguous();
    default: return grad.to(call.sum_dtype()).reshape({rows}).contiguous();
  }
}

at::Tensor fold(const at::Tensor& grad, const RowCall& call, const at::Tensor& input) {
  return fold_to(grad.view(call.shape()), input.sizes(), input.scalar_type());
}

at::Tensor fold_to(const at::Tensor& grad, at::IntArrayRef shape, at::ScalarType dtype) {
  const at::Tensor folded = grad.sizes() == shape ? grad : grad.sum_to_size(shape);
  return folded.scalar_type() == dtype ? folded : folded.to(dtype);
}

variable_list zero_grads(Node& node, const variable_list& inputs) {
  variable_list grads(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (node.task_should_compute_output(i)) grads[i] = at::zeros_like(inputs[i]);
  }
  return grads;
}

bool any_requires_grad(std::initializer_list<const at::Tensor*> tensors) {
  if (!c10::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : tensors) {
    if (t && t->defined() && t->requires_grad()) return true;
  }
  return false;
}

variable_list once_differentiable(const char* op, variable_list grads, const variable_list& saved,
                                  const variable_list& grad_outputs) {
  if (!c10::GradMode::is_enabled()) return grads;
  bool differentiable = false;
  for (const auto* list : {&saved, &grad_outputs}) {
    for (const at::Tensor& t : *list) differentiable = differentiable || (t.defined() && t.requires_grad());
  }
  if (!differentiable) return grads;
  // As torch.autograd.function.once_differentiable: aliases of the gradients
  // whose grad_fn raises when a second derivative flows through it.
  variable_list aliases;
  aliases.reserve(grads.size());
  for (const at::Tensor& g : grads) {
    aliases.push_back(g.defined() ? g.detach().requires_grad_(true) : at::Tensor());
  }
  torch::autograd::DelayedError error(std::string("fastgen.") + op +
                                          ": second derivatives are not implemented (the gradient of this op was "
                                          "differentiated again, e.g. after backward(create_graph=True))",
                                      static_cast<int64_t>(aliases.size()));
  variable_list wrapped = error.apply(std::move(aliases));
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined()) wrapped[i] = at::Tensor();
  }
  return wrapped;
}

}  // namespace fastgen::ops
