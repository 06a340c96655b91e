"""The Tessera operator: World and ZoneServer CRDs, the pure zone planner, the
kopf operator (Kubernetes runtime) and the local process runtime."""
