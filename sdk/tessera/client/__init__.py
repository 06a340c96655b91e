"""Tessera client SDK."""
