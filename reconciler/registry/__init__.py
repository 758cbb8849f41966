"""Registry HTTP API v2 (Docker Hub and any OCI registry): challenges and tokens in `auth`, where credentials come
from in `credentials`, requests in `client`, and reading what a registry answered in `answers`."""
