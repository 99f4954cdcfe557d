"""HTTP only: one module per resource, SSE encoding, error mapping."""
