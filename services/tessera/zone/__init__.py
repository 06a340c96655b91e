"""Zone service: one authoritative simulation process owning one rectangle of a world."""
