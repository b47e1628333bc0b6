"""The one version string of Shoal: the package, the image tag and the chart's appVersion follow it."""

__version__ = "0.1.0"
