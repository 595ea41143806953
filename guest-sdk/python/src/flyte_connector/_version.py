"""The SDK's version: the package's (pyproject.toml reads it here) and what
components built with it report to the host."""

VERSION = "0.1.0"
