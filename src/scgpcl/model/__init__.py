"""User-facing model classes."""

from ._scgpcl import SCGPCL

__all__ = ["SCGPCL"]
