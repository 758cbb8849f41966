"""Registry HTTP API v2 (Docker Hub and any OCI registry): authentication in `auth`, requests in `client`."""
