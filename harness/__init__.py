"""warmbench harness: experiments, load generator, metrics, results store, reports, CLI."""

__version__ = "0.1.0"
