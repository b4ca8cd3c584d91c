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

Both variants start from identical weights and data. Times are per step.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, List

import torch
import torch.nn.functional as F

from bench import cases
from bench.models import (DCGANCritic28, DCGANCritic64, DCGANGenerator28, DCGANGenerator64,
                          MLPVAE)


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
    return out
