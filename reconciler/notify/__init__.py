"""Delivering notifications: the targets (Apprise, the signed webhook) and the courier that empties the outbox."""
