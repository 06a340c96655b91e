"""Tessera load tool: bot swarms following scripted scenarios against any endpoint."""
