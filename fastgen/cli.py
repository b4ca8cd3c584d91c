"""Command line: ``fastgen train``, ``fastgen demo`` and forwarded sub-commands (``fastgen bench``).

Examples::

    fastgen train vae --data digits --epochs 20 --batch-size 64 --out runs/vae
    fastgen train wgan-gp --data mnist:/data/mnist --epochs 5 --batch-size 64 --out runs/wgangp --resume
    fastgen demo --out demo
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

__all__ = ["main", "build_parser", "MODEL_BUILDERS", "build_model"]


def _vae_family(shape, num_classes, args):
    from fastgen.models import IWAE, VAE, BetaVAE, ConditionalVAE

    arch, latent = args.arch or "mlp", args.latent_dim or 16
    builders = {
        "vae": lambda: getattr(VAE, arch)(shape, latent_dim=latent),
        "beta-vae": lambda: getattr(BetaVAE, arch)(shape, latent_dim=latent),
        "iwae": lambda: getattr(IWAE, arch)(shape, latent_dim=latent, num_samples=5),
        "cvae": lambda: getattr(ConditionalVAE, arch)(shape, _need_classes(num_classes, "cvae"), latent_dim=latent),
    }
    return builders[args.model]()


def _gan_family(shape, num_classes, args):
    from fastgen.models import DCGAN, GAN, WGAN, WGANGP, ConditionalGAN

    arch = args.arch or ("conv" if args.model == "dcgan" else "mlp")
    latent = args.latent_dim or (100 if arch == "conv" else 32)
    builders = {
        "gan": lambda: getattr(GAN, arch)(shape, latent_dim=latent, loss=args.gan_loss or "non-saturating"),
        "dcgan": lambda: DCGAN(shape, latent_dim=latent, loss=args.gan_loss or "non-saturating"),
        "cgan": lambda: getattr(ConditionalGAN, arch)(shape, _need_classes(num_classes, "cgan"), latent_dim=latent,
                                                     loss=args.gan_loss or "non-saturating"),
        "wgan": lambda: getattr(WGAN, arch)(shape, latent_dim=latent),
        "wgan-gp": lambda: getattr(WGANGP, arch)(shape, latent_dim=latent),
    }
    if args.model == "dcgan" and args.arch == "mlp":
        raise _UsageError("argument --arch: dcgan is convolutional; use 'gan --arch mlp' for an MLP GAN")
    return builders[args.model]()


def _need_classes(num_classes: int, model: str) -> int:
    if num_classes < 2:
        raise _UsageError(f"argument model: {model} is conditional and needs a labelled dataset")
    return num_classes


#: model name -> builder(data_shape, num_classes, args)
MODEL_BUILDERS: dict[str, Callable] = {
    name: (_vae_family if name in ("vae", "beta-vae", "cvae", "iwae") else _gan_family)
    for name in ("vae", "beta-vae", "cvae", "iwae", "gan", "dcgan", "cgan", "wgan", "wgan-gp")
}

#: sub-commands implemented elsewhere: name -> (module, function, help). The function is
#: called with the remaining arguments, ``main(argv) -> int | None``.
FORWARDED_COMMANDS: dict[str, tuple[str, str, str]] = {
    "bench": ("bench.__main__", "main", "benchmark the fused ops (bench/; forwards its arguments)"),
}


class _UsageError(Exception):
    """A bad argument detected after parsing (reported through the parser, exit code 2)."""


def build_model(name: str, data_shape: Sequence[int], num_classes: int, *, arch: str | None = None,
                latent_dim: int | None = None, gan_loss: str | None = None):
    """The CLI's model ``name`` for data of ``data_shape`` (``num_classes`` for conditional ones)."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_BUILDERS)}")
    args = argparse.Namespace(model=name, arch=arch, latent_dim=latent_dim, gan_loss=gan_loss)
    return MODEL_BUILDERS[name](tuple(data_shape), num_classes, args)


# -- argument types: each error message is prefixed by argparse with "argument --NAME:" ------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _data_spec(text: str) -> str:
    if text == "digits":
        return text
    if text.startswith("mnist:"):
        folder = Path(text[len("mnist:"):])
        if not text[len("mnist:"):]:
            raise argparse.ArgumentTypeError("mnist needs a folder: mnist:PATH")
        if not folder.is_dir():
            raise argparse.ArgumentTypeError(f"MNIST folder {folder} does not exist")
        return text
    raise argparse.ArgumentTypeError(f"expected 'digits' or 'mnist:PATH', got {text!r}")


def _device(text: str) -> str:
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (try 'cpu' or 'cuda')") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} requested but CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"unsupported device type {device.type!r}; use 'cpu' or 'cuda'")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The parser; add a sub-command with ``subcommands.add_parser`` or via FORWARDED_COMMANDS."""
    parser = argparse.ArgumentParser(prog="fastgen", description="Fused kernels and models for VAEs and GANs.")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = subcommands.add_parser("train", help="train a model; writes metrics.csv, samples.png, curves.png, "
                                                 "checkpoint.pt to --out")
    train.add_argument("model", choices=list(MODEL_BUILDERS), metavar="model",
                       help="one of: " + ", ".join(MODEL_BUILDERS))
    train.add_argument("--data", type=_data_spec, default="digits", help="'digits' (bundled) or 'mnist:PATH' "
                       "(folder with the IDX files); default digits")
    train.add_argument("--epochs", type=_positive_int, required=True)
    train.add_argument("--batch-size", type=_positive_int, default=64)
    train.add_argument("--out", type=Path, required=True, help="output folder")
    train.add_argument("--device", type=_device, default="cpu")
    train.add_argument("--seed", type=_non_negative_int, default=0)
    train.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    train.add_argument("--cuda-graph", action="store_true",
                       help="capture the training step in a CUDA graph and replay it (VAE family, --device cuda)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--arch", choices=("mlp", "conv"), help="network type (default: mlp; conv for dcgan)")
    train.add_argument("--latent-dim", type=_positive_int)
    train.add_argument("--gan-loss", choices=("non-saturating", "minimax", "hinge", "lsgan", "wasserstein"),
                       help="adversarial loss for gan, dcgan, cgan")
    train.add_argument("--binarize", action="store_true", help="dynamically binarize the images")
    train.add_argument("--plot-every", type=_positive_int, default=1, help="epochs between sample grids and curve plots")
    train.add_argument("--threads", type=_positive_int, help="CPU threads for torch (default: torch's choice); "
                       "1 is fastest for the small default networks")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    train.set_defaults(handler=_train, command_parser=train)

    demo = subcommands.add_parser("demo", help="train a VAE and a WGAN on the digits in a few minutes")
    demo.add_argument("--out", type=Path, default=Path("demo"))
    demo.add_argument("--seed", type=_non_negative_int, default=0)
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(handler=_demo, command_parser=demo)

    for name, (_, _, help_text) in FORWARDED_COMMANDS.items():
        # Listed for --help only; main() hands these over before parsing.
        subcommands.add_parser(name, help=help_text, add_help=False)
    return parser


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from fastgen.data import first_item_shape, load_dataset, num_classes_of
    from fastgen.train import CheckpointError, TrainingDivergedError, _check_cuda_graph, fit

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        train_data, eval_data = load_dataset(args.data, binarize=args.binarize)
    except (FileNotFoundError, ValueError) as error:  # missing or malformed IDX file, named in the message
        parser.error(f"argument --data: {error}")
    torch.manual_seed(args.seed)  # network initialization
    try:
        model = build_model(args.model, first_item_shape(train_data), num_classes_of(train_data), arch=args.arch,
                            latent_dim=args.latent_dim, gan_loss=args.gan_loss)
    except _UsageError as error:
        parser.error(str(error))
    except ValueError as error:  # e.g. image sides not multiples of 4 for the conv nets
        parser.error(f"argument --arch: {error}")
    try:
        _check_cuda_graph(args.cuda_graph, model, torch.device(args.device))
    except ValueError as error:
        parser.error(f"argument --cuda-graph: {error}")
    try:
        fit(model, train_data, eval_data=eval_data, epochs=args.epochs, batch_size=args.batch_size, out_dir=args.out,
            device=args.device, amp=args.amp, resume=args.resume, seed=args.seed, plot_every=args.plot_every,
            progress=not args.no_progress, title=args.model, cuda_graph=args.cuda_graph)
    # Failures a run can meet: their messages say what happened and what to do, so one line
    # serves better than a traceback. Anything else is a bug and keeps its traceback.
    except (CheckpointError, TrainingDivergedError, OSError) as error:  # OSError: fit's OutputError and the like
        if args.debug:
            raise
        message = " ".join(line.strip() for line in str(error).splitlines())
        print(f"fastgen: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"fastgen: error: interrupted; rerun with --resume to continue from the last checkpoint in {args.out}",
              file=sys.stderr)
        return 130
    return 0


#: the demo's runs: (folder, model, epochs, batch size, plot_every); sized for ~1 minute each on 2 CPU cores
DEMO_RUNS = (
    ("vae", "vae", 40, 64, 10),
    ("wgan", "wgan", 400, 64, 40),
)


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from fastgen.data import digits
    from fastgen.train import fit

    # The demo networks are tiny: per-op overhead dominates and a second thread only adds
    # synchronization (tens of times slower when the cores are shared).
    torch.set_num_threads(1)
    train_data, eval_data = digits()
    total = time.perf_counter()
    for folder, name, epochs, batch_size, plot_every in DEMO_RUNS:
        started = time.perf_counter()
        torch.manual_seed(args.seed)
        model = build_model(name, (1, 8, 8), 10)
        out = args.out / folder
        fit(model, train_data, eval_data=eval_data, epochs=epochs, batch_size=batch_size, out_dir=out,
            seed=args.seed, plot_every=plot_every, progress=not args.no_progress, title=f"{name} on digits",
            log=lambda message: None)
        print(f"{name}: {epochs} epochs in {time.perf_counter() - started:.1f}s -> {out}/samples.png, {out}/curves.png")
    print(f"demo finished in {time.perf_counter() - total:.1f}s")
    return 0


def _forward(name: str, argv: list[str]) -> int:
    module_name, function_name, _ = FORWARDED_COMMANDS[name]
    # bench/ is not installed with the package: in a source checkout (an
    # editable install) it sits beside fastgen/.
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / module_name.split(".")[0]).is_dir() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        print(f"fastgen {name}: cannot import {module_name} ({error}); run from the repository root "
              f"or install the package that provides it", file=sys.stderr)
        return 2
    result = getattr(module, function_name)(argv)
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastgen`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDED_COMMANDS:
        return _forward(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    # Errors found after parsing go through the sub-command's parser: same usage line and exit code 2.
    return args.handler(args, args.command_parser)


if __name__ == "__main__":
    sys.exit(main())
