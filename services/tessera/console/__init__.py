"""Live web console: the world map, zones, scaling timeline, relays and admin actions."""
