"""Tessera client SDK: login, connect to a relay, play, and bots built on it."""
