"""The conversation side of releasegate: grammar, rules, approvals and chat adapters."""
