"""The formulas of every fused op and the noise stream, as @triton.jit helpers.

Triton cannot include csrc/include/fastgen/math.h, so this module is its one
Triton spelling: every kernel module calls these helpers and none re-derives
a formula. Arguments are already in the compute type (float32, or float64 for
float64 inputs); the helpers keep that type.
"""

import triton
import triton.language as tl

LOG_2PI = tl.constexpr(1.8378770664093453)  # log(2 pi)


@triton.jit
def to_compute_type(x):
    """x in its compute type: float64 stays float64, float32 and half types become float32."""
    # An else branch (not a fall-through return): the compiler then sees one return type.
    if x.dtype == tl.float64:
        return x
    else:
        return x.to(tl.float32)


# ---------------------------------------------------------------- the noise stream


@triton.jit
def philox_normal(seed, offset, first, WIDTH: tl.constexpr, ALIGNED: tl.constexpr):
    """N(0, 1) noise of design.md's stream at flat indices first + [0, WIDTH), float32.

    Element i is lane i % 4 of tl.randn4x(seed, offset + i // 4). `first` is
    an int64 scalar (result shape [WIDTH]) or a column [R, 1] (result [R, WIDTH]).
    ALIGNED promises first % 4 == 0: then each group of four consecutive
    elements is one randn4x call, interleaved lane by lane. Otherwise every
    element runs Philox for its own counter and keeps its lane (four times the
    arithmetic, for shapes whose rows do not start on a multiple of 4).
    """
    if ALIGNED:
        counters = offset + (first >> 2) + tl.arange(0, WIDTH // 4)
        n0, n1, n2, n3 = tl.randn4x(seed, counters)
        # interleave(interleave(n0, n2), interleave(n1, n3)) = n0 n1 n2 n3 n0 n1 ...
        return tl.interleave(tl.interleave(n0, n2), tl.interleave(n1, n3))
    index = first + tl.arange(0, WIDTH)
    i0, i1, i2, i3 = tl.randint4x(seed, offset + (index >> 2))
    lane = index & 3
    # Lanes 0, 1 are Box-Muller of words (0, 1); lanes 2, 3 of words (2, 3).
    low_pair = lane < 2
    u1 = tl.random.uint_to_uniform_float(tl.where(low_pair, i0, i2))
    u2 = tl.random.uint_to_uniform_float(tl.where(low_pair, i1, i3))
    normal_cos, normal_sin = tl.random.pair_uniform_to_normal(u1, u2)
    return tl.where((lane & 1) == 0, normal_cos, normal_sin)


# ---------------------------------------------------------------- reparameterize


@triton.jit
def std_from_logvar(logvar):
    """exp(logvar / 2)."""
    return tl.exp(0.5 * logvar)


@triton.jit
def reparameterize_sample(mu, logvar, eps):
    """z = mu + exp(logvar / 2) * eps."""
    return mu + std_from_logvar(logvar) * eps


@triton.jit
def reparameterize_grad_logvar(logvar, sum_grad_eps):
    """dz/dlogvar = exp(logvar / 2) * eps / 2, so grad_logvar = std / 2 * sum_k g_k eps_k."""
    return 0.5 * std_from_logvar(logvar) * sum_grad_eps


# ---------------------------------------------------------------- Gaussian KL


@triton.jit
def kl_std_normal(mu, logvar):
    """KL(N(mu, e^logvar) || N(0, 1)) = (e^logvar + mu^2 - 1 - logvar) / 2."""
    return 0.5 * (tl.exp(logvar) + mu * mu - 1.0 - logvar)


@triton.jit
def kl_std_normal_grad_logvar(logvar):
    """d/dlogvar of kl_std_normal = (e^logvar - 1) / 2; d/dmu is mu itself."""
    return 0.5 * (tl.exp(logvar) - 1.0)


@triton.jit
def kl_diag_normal(mu, logvar, prior_mu, prior_logvar):
    """KL(N(mu, e^lv) || N(pm, e^plv)) = (plv - lv + (e^lv + (mu - pm)^2) e^-plv - 1) / 2."""
    diff = mu - prior_mu
    return 0.5 * (prior_logvar - logvar + (tl.exp(logvar) + diff * diff) * tl.exp(-prior_logvar) - 1.0)


@triton.jit
def kl_diag_normal_grads(mu, logvar, prior_mu, prior_logvar):
    """Gradients of kl_diag_normal: (d/dmu, d/dlv, d/dplv).

    d/dmu = (mu - pm) e^-plv (d/dpm is its negative); d/dlv = (e^(lv - plv) - 1) / 2;
    d/dplv = -d/dlv - (mu - pm)^2 e^-plv / 2.
    """
    diff = mu - prior_mu
    inv_prior_var = tl.exp(-prior_logvar)
    grad_logvar = 0.5 * (tl.exp(logvar - prior_logvar) - 1.0)
    return diff * inv_prior_var, grad_logvar, -grad_logvar - 0.5 * diff * diff * inv_prior_var


# ---------------------------------------------------------------- Bernoulli


@triton.jit
def log1p_small(u):
    """log(1 + u) for u in [0, 1], accurate where u is tiny.

    Triton's core language has no log1p (libdevice's is CUDA-only and absent
    from the interpreter), so this is Goldberg's correction: with w = 1 + u
    rounded, log(w) * u / (w - 1) cancels the rounding of w.
    """
    w = 1.0 + u
    rounded_away = w == 1.0
    # The divisor is kept nonzero where its quotient is discarded.
    return tl.where(rounded_away, u, tl.log(w) * (u / tl.where(rounded_away, 1.0, w - 1.0)))


@triton.jit
def softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|), finite for any finite x."""
    return tl.maximum(x, 0.0) + log1p_small(tl.exp(-tl.abs(x)))


@triton.jit
def bernoulli_log_prob(logits, target):
    """log p(target | logits) = target * logits - softplus(logits)."""
    return target * logits - softplus(logits)


@triton.jit
def bernoulli_log_prob_grad_logits(logits, target):
    """d/dlogits = target - sigmoid(logits); d/dtarget is logits itself."""
    return target - 1.0 / (1.0 + tl.exp(-logits))


# ---------------------------------------------------------------- Gaussian log-density


@triton.jit
def log_2pi_like(x):
    """log(2 pi) in x's dtype, built in that dtype so that float64 keeps all its digits
    (older Triton rounds a bare float literal to float32 before promoting it)."""
    return tl.full([], LOG_2PI, x.dtype)


@triton.jit
def gaussian_log_prob(x, mean, logvar):
    """log N(x; mean, e^logvar) = -(log 2 pi + logvar + (x - mean)^2 e^-logvar) / 2."""
    diff = x - mean
    return -0.5 * (log_2pi_like(diff) + logvar + diff * diff * tl.exp(-logvar))


@triton.jit
def gaussian_log_prob_unit(x, mean):
    """Unit variance: -(log 2 pi + (x - mean)^2) / 2."""
    diff = x - mean
    return -0.5 * (log_2pi_like(diff) + diff * diff)


@triton.jit
def gaussian_log_prob_grads(x, mean, logvar):
    """(d/dx, d/dlogvar) = (-(x - mean) e^-logvar, ((x - mean)^2 e^-logvar - 1) / 2); d/dmean = -d/dx."""
    diff = x - mean
    scaled = diff * tl.exp(-logvar)
    return -scaled, 0.5 * (scaled * diff - 1.0)


@triton.jit
def gaussian_log_prob_unit_grad_x(x, mean):
    """d/dx of gaussian_log_prob_unit = mean - x."""
    return mean - x


# ---------------------------------------------------------------- IWAE log-weights


@triton.jit
def log_weight_std_normal(z, logvar, eps):
    """log N(z; 0, 1) - log N(z; mu, e^logvar) at z = mu + e^(logvar/2) eps: (logvar + eps^2 - z^2) / 2."""
    return 0.5 * (logvar + eps * eps - z * z)


@triton.jit
def log_weight_diag_normal(z, logvar, eps, prior_mu, prior_logvar):
    """With the prior N(pm, e^plv): (logvar + eps^2 - plv - (z - pm)^2 e^-plv) / 2 (the log 2 pi cancel)."""
    diff = z - prior_mu
    return 0.5 * (logvar + eps * eps - prior_logvar - diff * diff * tl.exp(-prior_logvar))


@triton.jit
def log_weight_score(z, prior_mu, prior_logvar):
    """The prior's score s = (z - pm) e^-plv: d log p / dz = -s."""
    return (z - prior_mu) * tl.exp(-prior_logvar)


@triton.jit
def log_weight_grad_z(grad_z, grad_w, score):
    """The gradient reaching sample z_k: a_k = g_z - g_w s_k."""
    return grad_z - grad_w * score


@triton.jit
def log_weights_grad_logvar(logvar, sum_grad_z_eps, sum_grad_w):
    """grad_logvar = std / 2 * sum_k a_k eps_k + sum_k g_w / 2."""
    return reparameterize_grad_logvar(logvar, sum_grad_z_eps) + 0.5 * sum_grad_w


@triton.jit
def log_weight_grad_prior_logvar(grad_w, score, diff):
    """One sample's d/dplv: g_w (s (z - pm) - 1) / 2."""
    return 0.5 * grad_w * (score * diff - 1.0)


# ---------------------------------------------------------------- gradient penalty


@triton.jit
def grad_norm_penalty(norm, center):
    """(||g|| - c)^2."""
    diff = norm - center
    return diff * diff


@triton.jit
def grad_norm_penalty_scale(norm, center, grad_out):
    """The per-row factor of d/dg (||g|| - c)^2 = 2 (||g|| - c) g / ||g||, times the upstream gradient; 0 at ||g|| = 0."""
    safe = tl.where(norm == 0.0, 1.0, norm)
    return tl.where(norm == 0.0, 0.0, 2.0 * grad_out * (norm - center) / safe)


@triton.jit
def interpolate(real, fake, eps):
    """eps x + (1 - eps) x~."""
    return eps * real + (1.0 - eps) * fake


@triton.jit
def philox_uniform(seed, counter):
    """One uniform in [0, 1) per counter: tl.rand(seed, counter), word 0 of Philox at that counter."""
    return tl.rand(seed, counter)
