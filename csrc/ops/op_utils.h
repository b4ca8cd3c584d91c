// The op layer: what happens between a public call and a kernel, written once
// for every backend. Each csrc/ops/<op>.cpp defines its op's schemas and
// registers, for the public op, a CompositeExplicitAutograd kernel (the call
// without autograd: checks, broadcasting, kernel, reduction) and an Autograd
// kernel that runs it and, when a gradient is needed, records the op's
// backward node. Both are built from the helpers here: argument checks that
// name the argument, broadcasting into the row contract of the kernel ops,
// reductions, gradient folding, and the refusal of second derivatives.
//
// Why C++ autograd, and why a node of our own: at the sizes VAEs train at
// (batch 128, latent 20) host time is the cost. Measured on one CPU thread at
// 128x20, gaussian_kl's forward with grad / forward+backward (with the
// loss's .sum().backward(), about 22 us by itself) cost 68 / 161 us through
// torch.library.register_autograd (whose Python autograd kernel runs even
// under no_grad) and 5.6 / 63 us with the node below. On a product op, a
// Python torch.autograd.Function added 4 / 13 us to a native op, and a C++
// torch::autograd::Function 1.2 / 9 us more than a node of our own. A node
// is what torch.compile traces without a graph break, and it serves the
// CPU, CUDA and Triton kernels alike.
//
// Kernels: every public op exists in two namespaces with the same schema,
// "fastgen" (whose kernel ops `_<op>` and `_<op>_backward` are the C++ CPU
// and CUDA kernels, csrc/cpu and csrc/cuda) and "fastgen_triton" (whose
// kernel ops are the Triton kernels of kernels/, registered from Python). The
// op layer is a template over the namespace; fastgen/ops chooses it per call.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace fastgen::ops {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

enum class Kernels { kCpp, kTriton };

inline const char* namespace_of(Kernels kernels) {
  return kernels == Kernels::kCpp ? "fastgen" : "fastgen_triton";
}

// Op `name` of a namespace; call sites keep the handle in a static.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(Kernels kernels, const char* name) {
  const std::string qualified = std::string(namespace_of(kernels)) + "::" + name;
  return c10::Dispatcher::singleton().findSchemaOrThrow(qualified.c_str(), "").typed<Signature>();
}

// Kernel op `name` in both namespaces: kernel_op[kernels].call(...).
template <typename Signature>
class KernelOp {
 public:
  explicit KernelOp(const char* name)
      : ops_{find_op<Signature>(Kernels::kCpp, name), find_op<Signature>(Kernels::kTriton, name)} {}
  const c10::TypedOperatorHandle<Signature>& operator[](Kernels kernels) const {
    return ops_[static_cast<int>(kernels)];
  }

 private:
  c10::TypedOperatorHandle<Signature> ops_[2];
};

// Defines the schemas of one op in both namespaces: `define` is the op file's
// function of a torch::Library&.
#define FASTGEN_DEFINE_OPS(define)                                 \
  TORCH_LIBRARY_FRAGMENT(fastgen, m) { define(m); }               \
  TORCH_LIBRARY_FRAGMENT(fastgen_triton, m) { define(m); }

// Registers `kernel` templated on Kernels for public op `name` of both
// namespaces at dispatch key `key`.
#define FASTGEN_IMPL_BOTH(name, key, kernel)                                                 \
  TORCH_LIBRARY_IMPL(fastgen, key, m) { m.impl(name, &kernel<fastgen::ops::Kernels::kCpp>); } \
  TORCH_LIBRARY_IMPL(fastgen_triton, key, m) { m.impl(name, &kernel<fastgen::ops::Kernels::kTriton>); }

// ------------------------------------------------------------------ checks

// A tensor argument of a public op by name; `tensor` is null for an absent optional.
struct Named {
  const char* name;
  const at::Tensor* tensor;
};

inline Named named(const char* name, const at::Tensor& t) { return {name, &t}; }
inline Named named(const char* name, const std::optional<at::Tensor>& t) {
  return {name, t.has_value() && t->defined() ? &*t : nullptr};
}

// float32, float64, float16 or bfloat16: the dtypes every op takes.
bool is_fastgen_dtype(at::ScalarType dtype);

// torch's Python name of a dtype (torch.float32), as users write it.
std::string dtype_name(at::ScalarType dtype);
// A shape as Python prints a tuple: (3, 4), (5,), ().
std::string shape_name(at::IntArrayRef shape);

// The broadcast view of one call: the operands' common shape, dtype (their
// promotion) and device, after checking that each is a dense floating tensor,
// that they share a device and that their shapes broadcast.
struct Operands {
  at::DimVector shape;
  at::ScalarType dtype;
  at::Device device;
};

Operands check_operands(const char* op, std::initializer_list<Named> operands);

// event_dims within [0, ndim].
void check_event_dims(const char* op, int64_t event_dims, int64_t ndim);

// num_samples >= 1 when given.
void check_num_samples(const char* op, const std::optional<int64_t>& num_samples);

// A generator on the device type of the tensors.
void check_generator(const char* op, const std::optional<at::Generator>& generator, const at::Device& device);

enum class Reduction { kNone, kSum, kMean };
Reduction parse_reduction(const char* op, c10::string_view reduction);

// ------------------------------------------------------------------ rows

// A row op's call seen as csrc/row_shape.h's contract: `shape` split into
// batch dims (one output each) and the last `event_dims` dims (summed).
struct RowCall {
  Operands operands;
  int64_t event_dims;

  at::IntArrayRef shape() const { return operands.shape; }
  at::IntArrayRef batch_shape() const { return shape().slice(0, shape().size() - event_dims); }
  int64_t numel() const { return c10::multiply_integers(shape()); }
  int64_t rows() const { return c10::multiply_integers(batch_shape()); }
  // The dtype of the per-row sums: float32 for half inputs.
  at::ScalarType sum_dtype() const {
    return operands.dtype == at::kDouble ? at::kDouble : at::kFloat;
  }
};

RowCall check_rows(const char* op, std::initializer_list<Named> operands, int64_t event_dims);

// `t` as a kernel op reads it: contiguous, of the call's dtype, its flattened
// data repeating to fill the call's shape. A tensor broadcast only over
// leading dims keeps its own data (a learned prior of shape (D,) stays D
// elements); anything else is expanded. No copy when `t` already fits.
at::Tensor row_operand(const at::Tensor& t, const RowCall& call);
std::optional<at::Tensor> row_operand(const std::optional<at::Tensor>& t, const RowCall& call);

// An optional argument from a saved tensor (undefined when it was absent).
inline std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// `t` expanded to `shape` and made contiguous in `dtype` (no copy when it fits).
at::Tensor full_operand(const at::Tensor& t, at::IntArrayRef shape, at::ScalarType dtype);

// Per-row sums (rows,) shaped like the batch dims and reduced.
at::Tensor finish_rows(const at::Tensor& per_row, const RowCall& call, Reduction reduction);

// The upstream gradient of finish_rows' result as one value per row.
at::Tensor grad_per_row(const at::Tensor& grad, const RowCall& call, Reduction reduction);

// A full-size gradient (numel elements of the call's shape) summed down to the
// shape and dtype of `input`, the argument it belongs to.
at::Tensor fold(const at::Tensor& grad, const RowCall& call, const at::Tensor& input);
// `grad` (of the call's shape) summed down to `shape` and given `dtype`.
at::Tensor fold_to(const at::Tensor& grad, at::IntArrayRef shape, at::ScalarType dtype);

// ------------------------------------------------------------------ autograd
// A public op that needs a gradient records a backward node of its own (a
// torch::autograd::Node, as ATen's ops do): its saved tensors, its arguments,
// and apply(), which calls the backend's backward kernel op.

namespace detail {
// How this torch holds autograd nodes: c10::intrusive_ptr since PyTorch PR
// 181139 (torch 2.13 here), std::shared_ptr freed by deleteNode before (2.11).
template <typename Holder>
struct NodeFactory;

template <typename T>
struct NodeFactory<std::shared_ptr<T>> {
  template <typename N>
  static std::shared_ptr<N> make() {
    // deleteNode (found by argument-dependent lookup, as only these releases
    // have it) frees a long chain of nodes without deep recursion.
    return std::shared_ptr<N>(new N(), [](auto* node) { deleteNode(node); });
  }
};

template <typename T>
struct NodeFactory<c10::intrusive_ptr<T>> {
  template <typename N>
  static c10::intrusive_ptr<N> make() {
    return c10::make_intrusive<N>();
  }
};
}  // namespace detail

// A new backward node of type N, held as this torch holds nodes.
template <typename N>
auto make_node() {
  using Holder = std::decay_t<decltype(std::declval<const at::Tensor&>().grad_fn())>;
  return detail::NodeFactory<Holder>::template make<N>();
}

// Makes `node` the grad_fn of `outputs` (in order), its next edges those of
// `inputs` (tensors or optional tensors, one edge each, empty where absent).
template <typename NodePtr, typename... Inputs>
void record(const NodePtr& node, const std::vector<at::Tensor>& outputs, const Inputs&... inputs) {
  node->set_next_edges(torch::autograd::collect_next_edges(inputs...));
  torch::autograd::set_history(outputs, node);
}

// A saved input (an undefined tensor saves nothing).
inline SavedVariable saved(const at::Tensor& t) { return t.defined() ? SavedVariable(t, false) : SavedVariable(); }
inline SavedVariable saved(const std::optional<at::Tensor>& t) {
  return t.has_value() ? saved(*t) : SavedVariable();
}

// The gradients of a call without elements: zeros shaped like each input
// that needs one (apply's `node`, its saved `inputs` in argument order).
variable_list zero_grads(Node& node, const variable_list& inputs);

// Whether any of the tensors needs a gradient: with none, a public op runs
// its kernels without any autograd machinery.
bool any_requires_grad(std::initializer_list<const at::Tensor*> tensors);

// The gradients a backward returns, made to raise an error naming the op if
// they are differentiated again (backward under create_graph=True), as
// torch's once_differentiable does; never a silent zero second derivative.
variable_list once_differentiable(const char* op, variable_list grads, const variable_list& saved,
                                  const variable_list& grad_outputs);

}  // namespace fastgen::ops
