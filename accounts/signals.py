"""Signals accounts sends for others to react to (it imports none of them)."""

from django.dispatch import Signal

# Sent after commit when an UPDATE changed users without post_save (bulk admin actions):
# `user_ids`, a list. API keys cache their creator's active flag, so apikeys listens.
users_bulk_changed = Signal()

# Sent after commit when organizations changed what their keys' cache entries carry (plan,
# suspension): `org_ids`, a list. apikeys rewrites the entries of every key of theirs.
orgs_changed = Signal()

# Sent INSIDE the transaction that removes a member: `org_id`, `user_id`, `actor`. apikeys
# revokes the keys that member created in the organization in the same transaction, so no
# removal commits with a working key left behind.
member_removed = Signal()
