"""Release rules that the bot (when people ask and approve) and the worker (right before it
commits) decide with: identities, gates, approvals, plans and what Git says ran where."""
