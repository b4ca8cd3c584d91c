"""End-to-end training steps: the seed's eager way against the same step on fastgen's ops.

* ``vae_step``: one Adam step of the 784-400-20 MLP VAE, batch 128, Bernoulli decoder.
  eager: ``randn_like`` reparameterization, ``binary_cross_entropy_with_logits(reduction='sum')``
  and the textbook KL sum; fastgen: ``reparameterize_kl`` + ``bernoulli_log_likelihood``.
  On CUDA the whole step (forward, backward, ``Adam(capturable=True).step()``) is also
  captured once in a CUDA graph with static inputs and replayed (``<provider>+cudagraph``);
  the eager step is captured the same way, so the graph rows compare like with like.
* ``wgan_step``: one critic step (weight clipping, critic loss on real and generated
  batches, RMSprop) + one generator step, DCGAN-sized networks: 28x28x1 on CPU, 64x64x3 on
  CUDA, batch 64. eager clips with the per-parameter ``clamp_`` loop, fastgen with
  ``clip_weights_`` -- the rest of the step is identical, so this row shows what the fused
  clip is worth inside a whole step.

* ``iwae_step``: one Adam step of the same VAE trained on the IWAE bound with K = 5 and
  K = 50 importance samples (``iwae_step[K=5]``, ``iwae_step[K=50]``). eager: ``randn`` noise
  of the K samples, ``binary_cross_entropy_with_logits`` and the textbook log p(z) and
  log q(z|x) sums over the stored samples; fastgen: ``reparameterize_log_weights`` (samples and
  log p(z) - log q(z|x) in one pass, eps regenerated in backward) + ``bernoulli_log_likelihood``
  (the batch's pixels broadcast over the K samples, never expanded).
* ``wgan_gp_step``: one WGAN-GP critic step (G forward without grad, critic loss on real and
  generated batches, gradient penalty with lambda = 10, Adam) with the layer-norm 28x28
  critic, batch 64. eager: ``torch.rand`` weights, interpolation, ``autograd.grad(...,
  create_graph=True)``, ``view(B, -1).norm(2, dim=1)``, ``- 1``, ``** 2``, ``mean``; fastgen:
  ``fastgen.gradient_penalty`` (weights drawn in the interpolation kernel, the fused
  ``grad_norm_penalty``).

Both variants start from identical weights and data. Times are per step.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, List

import torch
import torch.nn.functional as F

from bench import cases
from bench.models import (DCGANCritic28, DCGANCritic64, DCGANGenerator28, DCGANGenerator64,
                          MLPVAE, WGANGPCritic28)


def vae_loss_eager(model: MLPVAE, x: torch.Tensor) -> torch.Tensor:
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    z = mu + eps * std
    logits = model.decode(z)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def vae_loss_fastgen(model: MLPVAE, x: torch.Tensor) -> torch.Tensor:
    import fastgen

    mu, logvar = model.encode(x)
    z, kl = fastgen.reparameterize_kl(mu, logvar)
    logits = model.decode(z)
    return -fastgen.bernoulli_log_likelihood(logits, x, reduction="sum") + kl.sum()


def iwae_loss_eager(model: MLPVAE, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    eps = torch.randn(num_samples, *mu.shape, device=x.device)
    z = mu + eps * std
    logits = model.decode(z)
    log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    log_pz = -0.5 * torch.sum(cases.LOG_2PI + z.pow(2), dim=-1)
    log_qz = -0.5 * torch.sum(cases.LOG_2PI + logvar + eps.pow(2), dim=-1)
    log_w = log_px + log_pz - log_qz
    return -(torch.logsumexp(log_w, dim=0) - math.log(num_samples)).mean()


def iwae_loss_fastgen(model: MLPVAE, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    import fastgen

    mu, logvar = model.encode(x)
    z, log_pz_minus_log_qz = fastgen.reparameterize_log_weights(mu, logvar, num_samples=num_samples)
    log_w = fastgen.bernoulli_log_likelihood(model.decode(z), x) + log_pz_minus_log_qz
    return -(torch.logsumexp(log_w, dim=0) - math.log(num_samples)).mean()


def make_iwae_step(loss_fn: Callable, num_samples: int, device: torch.device,
                   batch: int = 128) -> Callable[[], object]:
    return make_vae_step(lambda model, x: loss_fn(model, x, num_samples), device, batch)


def gradient_penalty_eager(critic, real: torch.Tensor, fake: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    batch = real.shape[0]
    alpha = torch.rand(batch, 1, 1, 1, device=real.device)
    interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(interpolates).sum(), interpolates, create_graph=True)
    return weight * ((grad.view(batch, -1).norm(2, dim=1) - 1) ** 2).mean()


def gradient_penalty_fastgen(critic, real: torch.Tensor, fake: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    import fastgen

    return fastgen.gradient_penalty(critic, real, fake, weight=weight)


def make_wgan_gp_critic_step(penalty: Callable, device: torch.device, batch: int = 64,
                             seed: int = 0) -> Callable[[], object]:
    """One WGAN-GP critic step: G(z) without grad, D's Wasserstein loss + 10 * penalty, Adam."""
    torch.manual_seed(seed)
    G, D = DCGANGenerator28().to(device), WGANGPCritic28().to(device)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.0, 0.9))
    real = torch.rand(batch, 1, 28, 28, device=device) * 2 - 1

    def step():
        opt_d.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake = G(torch.randn(batch, G.nz, device=device))
        loss = D(fake).mean() - D(real).mean() + penalty(D, real, fake)
        loss.backward()
        opt_d.step()
        return loss

    return step


def _vae_setup(device, batch, capturable=False, seed=0):
    torch.manual_seed(seed)
    model = MLPVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=capturable)
    x = torch.rand(batch, 784, device=device)  # soft pixel intensities in [0, 1]
    return model, opt, x


def make_vae_step(loss_fn: Callable, device: torch.device, batch: int = 128) -> Callable[[], object]:
    model, opt, x = _vae_setup(device, batch)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, x)
        loss.backward()
        opt.step()
        return loss

    return step


def make_vae_graph_step(loss_fn: Callable, device: torch.device, batch: int = 128) -> Callable[[], object]:
    """Capture forward + backward + Adam step once; the returned callable replays the graph."""
    model, opt, x = _vae_setup(device, batch, capturable=True)
    static_x = x.clone()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up outside the graph (allocator, lazy init, Adam state)
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            loss_fn(model, static_x).backward()
            opt.step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = loss_fn(model, static_x)
        static_loss.backward()
        opt.step()
    graph.replay()
    torch.cuda.synchronize(device)
    if not torch.isfinite(static_loss).item():
        raise RuntimeError("captured VAE step produced a non-finite loss")
    return graph.replay


def wgan_nets(device: torch.device):
    if device.type == "cuda":
        return DCGANGenerator64, DCGANCritic64, (3, 64, 64)
    return DCGANGenerator28, DCGANCritic28, (1, 28, 28)


def make_wgan_step(clip: Callable, device: torch.device, batch: int = 64, n_critic: int = 1,
                   seed: int = 0) -> Callable[[], object]:
    """One WGAN iteration as in the reference implementation: n_critic critic steps, then G."""
    G_cls, D_cls, img = wgan_nets(device)
    torch.manual_seed(seed)
    G, D = G_cls().to(device), D_cls().to(device)
    opt_g = torch.optim.RMSprop(G.parameters(), lr=5e-5)
    opt_d = torch.optim.RMSprop(D.parameters(), lr=5e-5)
    real = torch.rand(batch, *img, device=device) * 2 - 1
    nz = G.nz

    def step():
        for p in D.parameters():
            p.requires_grad_(True)
        for _ in range(n_critic):
            clip(D)
            opt_d.zero_grad(set_to_none=True)
            noise = torch.randn(batch, nz, device=device)
            with torch.no_grad():
                fake = G(noise)
            loss_d = D(fake).mean() - D(real).mean()
            loss_d.backward()
            opt_d.step()
        for p in D.parameters():
            p.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        noise = torch.randn(batch, nz, device=device)
        loss_g = -D(G(noise)).mean()
        loss_g.backward()
        opt_g.step()
        return loss_g

    return step


def clip_module_loop(module):
    cases.clip_loop(list(module.parameters()))


def clip_module_fastgen(module):
    import fastgen

    fastgen.clip_weights_(module, cases.CLIP_VALUE)


@dataclass
class StepCase:
    op: str
    provider: str
    shape: str
    numel: int
    make: Callable[[], Callable[[], object]]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    cudagraph: bool = False


def step_cases(device: torch.device, fastgen_backends: List[str], *, quick: bool = False) -> List[StepCase]:
    vb = 8 if quick else 128
    wb = 8 if quick else 64
    _, _, img = wgan_nets(device)
    img_s = "x".join(map(str, img))
    out: List[StepCase] = []
    variants = [("eager", vae_loss_eager, clip_module_loop, contextlib.nullcontext)]
    for b in fastgen_backends:
        variants.append((f"fastgen-{b}", vae_loss_fastgen, clip_module_fastgen,
                         lambda b=b: cases.fastgen_backend(b)))
    for name, loss_fn, clip, ctx in variants:
        out.append(StepCase("vae_step", name, f"{vb}x784", vb * 784,
                            lambda l=loss_fn: make_vae_step(l, device, vb), ctx))
    if device.type == "cuda":
        for name, loss_fn, clip, ctx in variants:
            out.append(StepCase("vae_step", name + "+cudagraph", f"{vb}x784", vb * 784,
                                lambda l=loss_fn: make_vae_graph_step(l, device, vb), ctx,
                                cudagraph=True))
    for name, loss_fn, clip, ctx in variants:
        out.append(StepCase("wgan_step", name, f"{wb}x{img_s}", wb * img[0] * img[1] * img[2],
                            lambda c=clip: make_wgan_step(c, device, wb), ctx))
    iwae = [("eager", iwae_loss_eager, gradient_penalty_eager, contextlib.nullcontext)]
    for b in fastgen_backends:
        iwae.append((f"fastgen-{b}", iwae_loss_fastgen, gradient_penalty_fastgen,
                     lambda b=b: cases.fastgen_backend(b)))
    for k in (5, 50):
        for name, loss_fn, _, ctx in iwae:
            out.append(StepCase(f"iwae_step[K={k}]", name, f"{vb}x784", vb * 784,
                                lambda l=loss_fn, k=k: make_iwae_step(l, k, device, vb), ctx))
    for name, _, penalty, ctx in iwae:
        out.append(StepCase("wgan_gp_step", name, f"{wb}x1x28x28", wb * 784,
                            lambda p=penalty: make_wgan_gp_critic_step(p, device, wb), ctx))
    return out
