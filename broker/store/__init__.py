"""Persistence back-ends behind one interface (``base.Store``)."""

from .base import Store
from .memory import MemoryStore

__all__ = ["Store", "MemoryStore"]
