"""Run webhooks: the URL policy that keeps them off internal networks, and the sender."""
