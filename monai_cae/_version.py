"""The package version, importable by any layer without importing the package's subpackages."""

__version__ = "0.1.0"
