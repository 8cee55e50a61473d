"""Signals apikeys sends for others to react to (it imports none of them); its own receivers,
which keep the key cache in step with the database, are in apikeys/receivers.py."""

from django.dispatch import Signal

# Sent after commit when a key got a new secret: `key` (the ApiKey, already holding the new
# hash), `actor` (the user who rotated it, or None), `grace_until` (when the old secret stops
# working, a datetime, or None when it stopped at once). sender=ApiKey.
key_rotated = Signal()

# Sent after commit when a key was revoked: `key`, `actor` (or None). sender=ApiKey.
key_revoked = Signal()
