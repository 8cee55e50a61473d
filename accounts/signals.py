"""Signals accounts sends for others to react to (it imports none of them)."""

from django.dispatch import Signal

# Sent after commit when an UPDATE changed users without post_save (bulk admin actions):
# `user_ids`, a list. API keys cache their owner's plan and active flag, so apikeys listens.
users_bulk_changed = Signal()
