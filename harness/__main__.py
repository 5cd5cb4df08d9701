import sys

from harness.cli import main

if __name__ == "__main__":  # vLLM's engine processes import this module again: run nothing then
    sys.exit(main())
