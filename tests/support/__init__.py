"""Reusable test-bed helpers (network namespaces, strongSwan peers, ...)."""
