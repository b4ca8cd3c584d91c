// clamp_'s public op: every tensor of a list clamped in place, in one call
// whatever their devices, dtypes and layouts. The op checks every tensor
// before any is changed, groups them by device and dtype for the kernel op
// _clamp_ (one kernel, one launch on CUDA, per group), and follows torch's
// in-place rules: a leaf that requires grad is refused under grad mode, and
// every tensor's version counter is bumped so that autograd sees the change.
#include "ops/op_utils.h"

#include <vector>

namespace fastgen::ops {
namespace {

constexpr const char* kOp = "clamp_";

void define(torch::Library& m) {
  m.def("clamp_(Tensor(a!)[] tensors, float min, float max) -> ()");
  // Kernel op: contiguous tensors of one device and dtype.
  m.def("_clamp_(Tensor(a!)[] tensors, float min, float max) -> ()");
}

struct Group {
  at::Device device;
  at::ScalarType dtype;
  std::vector<at::Tensor> kernel_tensors;
  // Non-contiguous tensors and the contiguous copies the kernel clamps.
  std::vector<std::pair<at::Tensor, at::Tensor>> write_back;
};

template <Kernels K>
void clamp_(at::TensorList tensors, double min, double max) {
  TORCH_CHECK_VALUE(!(min > max), "fastgen.clamp_: min (", min, ") must not exceed max (", max, ")");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    if (t.layout() != at::kStrided || !is_fastgen_dtype(t.scalar_type())) {
      const std::string name = "tensors[" + std::to_string(i) + "]";
      check_operands(kOp, {named(name.c_str(), t)});  // raises, naming the tensor
    }
  }
  std::vector<Group> groups;
  for (const at::Tensor& t : tensors) {
    if (t.numel() == 0) continue;
    auto group = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
      return g.device == t.device() && g.dtype == t.scalar_type();
    });
    if (group == groups.end()) group = groups.insert(groups.end(), Group{t.device(), t.scalar_type(), {}, {}});
    if (t.is_contiguous()) {
      group->kernel_tensors.push_back(t);
    } else {
      at::Tensor copy = t.contiguous();
      group->kernel_tensors.push_back(copy);
      group->write_back.emplace_back(t, copy);
    }
  }
  static const auto kernel = find_op<void(at::TensorList, double, double)>(K, "_clamp_");
  for (Group& group : groups) {
    kernel.call(group.kernel_tensors, min, max);
    for (auto& [tensor, copy] : group.write_back) tensor.copy_(copy);
  }
}

template <Kernels K>
void clamp_autograd(at::TensorList tensors, double min, double max) {
  if (c10::GradMode::is_enabled()) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (!tensors[i].requires_grad()) continue;
      TORCH_CHECK(!tensors[i].is_leaf(), "fastgen.clamp_: tensors[", i,
                  "]: a leaf Variable that requires grad is being used in an in-place operation.");
      TORCH_CHECK(false, "fastgen.clamp_: tensors[", i,
                  "] requires grad and clamping it in place has no derivative; call clamp_ under torch.no_grad()");
    }
  }
  at::AutoDispatchBelowAutograd below_autograd;
  static const auto op = find_op<decltype(clamp_<K>)>(K, kOp);
  op.call(tensors, min, max);
}

// As torch's in-place ops: the version bump that lets autograd refuse a
// graph whose saved tensors were changed.
template <Kernels K>
void clamp_version_bump(at::TensorList tensors, double min, double max) {
  {
    at::AutoDispatchBelowADInplaceOrView below;
    static const auto op = find_op<decltype(clamp_<K>)>(K, kOp);
    op.call(tensors, min, max);
  }
  for (const at::Tensor& t : tensors) torch::autograd::impl::bump_version(t);
}

}  // namespace

FASTGEN_DEFINE_OPS(define)
FASTGEN_IMPL_BOTH("clamp_", CompositeExplicitAutograd, clamp_)
FASTGEN_IMPL_BOTH("clamp_", Autograd, clamp_autograd)
FASTGEN_IMPL_BOTH("clamp_", ADInplaceOrView, clamp_version_bump)

}  // namespace fastgen::ops
