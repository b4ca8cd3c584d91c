"""``python -m bench [ARGS]`` -- ``fastgen bench ARGS`` forwards here via ``main(argv)``."""
import sys

from bench.runner import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
