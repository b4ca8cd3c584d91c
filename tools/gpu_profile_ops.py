"""The CUDA forward kernels that the GPU benchmark measures below 85% of copy, once each, for a
profiler (``ncu ... python tools/gpu_profile_ops.py``, the ``ncu`` phase of tools/gpu_check.sh):
row sums (event_dims=1), element-wise row sums (event_dims=0), the noise kernel of
reparameterize and the fused sample + KL of reparameterize_kl (both event_dims), at 32768x1024
float32: nine kernels, twice (the profiler skips the first nine launches, which load them).

Without a GPU it runs the same calls on the CPU kernels (a dry run of the script itself).
"""

import torch

import fastgen


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows, cols = (32768, 1024) if device == "cuda" else (64, 32)
    generator = torch.Generator(device).manual_seed(0)
    mu, logvar, logits = (torch.randn(rows, cols, device=device, generator=generator) for _ in range(3))
    target = torch.rand(rows, cols, device=device, generator=generator)
    calls = {
        "gaussian_kl": lambda ed: fastgen.gaussian_kl(mu, logvar, event_dims=ed),
        "bernoulli_log_likelihood": lambda ed: fastgen.bernoulli_log_likelihood(logits, target, event_dims=ed),
        "gaussian_log_likelihood": lambda ed: fastgen.gaussian_log_likelihood(target, mu, logvar, event_dims=ed),
    }
    with fastgen.use_backend("cuda" if device == "cuda" else "cpu"), torch.no_grad():
        for _ in range(2):
            for name, call in calls.items():
                for event_dims in (1, 0):
                    call(event_dims)
            fastgen.reparameterize(mu, logvar, generator=generator)
            for event_dims in (1, 0):
                fastgen.reparameterize_kl(mu, logvar, event_dims=event_dims, generator=generator)
        if device == "cuda":
            torch.cuda.synchronize()
    print(f"gpu_profile_ops: {len(calls) * 2 + 3} forwards twice on {device}, {rows}x{cols} float32")


if __name__ == "__main__":
    main()
