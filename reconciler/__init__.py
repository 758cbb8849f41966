"""reconciler: keeps deployments in step with container images, exactly once."""

__version__ = "0.1.0"
