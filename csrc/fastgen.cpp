// The op registry: every fastgen op's schema, defined once. Each backend
// (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cu) registers an implementation of these
// schemas; fastgen/ops.py registers fake kernels and autograd beside the
// public functions.
//
// Shapes: the likelihood and KL ops take contiguous operands whose flattened
// data repeat to fill rows x cols, cols the product of the last event_dims
// dims of the first operand, rows * cols the largest operand's numel (a
// broadcast prior of shape (D,) has period D). They return one float32
// (float64 for float64 inputs) sum per row; fastgen/ops.py does the shaping,
// broadcasting and reductions.
#include <Python.h>
#include <torch/library.h>

// The extension is loaded as a Python module so that `import fastgen._C`
// registers the ops; it has no Python functions of its own.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(fastgen, m) {
  // Noise: eps ~ N(0, I) from (seed, offset) as design.md defines it; the
  // outputs rng_state = int64 [seed, offset] let backward regenerate eps.
  m.def("reparameterize(Tensor mu, Tensor logvar, int? num_samples, Generator? generator)"
        " -> (Tensor z, Tensor rng_state)",
        {at::Tag::nondeterministic_seeded});
  m.def("reparameterize_backward(Tensor grad_z, Tensor logvar, Tensor rng_state, int? num_samples)"
        " -> Tensor grad_logvar");
  m.def("reparameterize_kl(Tensor mu, Tensor logvar, int? num_samples, int event_dims,"
        " Generator? generator) -> (Tensor z, Tensor kl, Tensor rng_state)",
        {at::Tag::nondeterministic_seeded});
  m.def("reparameterize_kl_backward(Tensor? grad_z, Tensor? grad_kl, Tensor mu, Tensor logvar,"
        " Tensor rng_state, int? num_samples, int event_dims) -> (Tensor grad_mu, Tensor grad_logvar)");
  // Fills a float32 tensor with elements [0, numel) of the stream (seed, offset).
  m.def("philox_normal_(Tensor(a!) out, int seed, int offset) -> Tensor(a!)");

  m.def("gaussian_kl(Tensor mu, Tensor logvar, Tensor? prior_mu, Tensor? prior_logvar, int event_dims)"
        " -> Tensor");
  // grad_prior_logvar is empty unless prior_logvar_grad; the prior mean's
  // gradient is -grad_mu.
  m.def("gaussian_kl_backward(Tensor grad, Tensor mu, Tensor logvar, Tensor? prior_mu,"
        " Tensor? prior_logvar, int event_dims, bool prior_logvar_grad)"
        " -> (Tensor grad_mu, Tensor grad_logvar, Tensor grad_prior_logvar)");

  m.def("bernoulli_log_likelihood(Tensor logits, Tensor target, int event_dims) -> Tensor");
  // grad_target is empty unless target_grad.
  m.def("bernoulli_log_likelihood_backward(Tensor grad, Tensor logits, Tensor target, int event_dims,"
        " bool target_grad) -> (Tensor grad_logits, Tensor grad_target)");

  m.def("gaussian_log_likelihood(Tensor x, Tensor mean, Tensor? logvar, int event_dims) -> Tensor");
  // The mean's gradient is -grad_x; grad_logvar is empty without logvar.
  m.def("gaussian_log_likelihood_backward(Tensor grad, Tensor x, Tensor mean, Tensor? logvar,"
        " int event_dims) -> (Tensor grad_x, Tensor grad_logvar)");

  // In-place clamp of every tensor of the list (one device and dtype).
  m.def("clamp_(Tensor(a!)[] tensors, float min, float max) -> ()");
}
