"""sppo-harness: Self-Play Preference Optimization iterations with honest, comparable evaluation."""

__version__ = "0.1.0"
