"""Everything releasegate keeps in Redis; `keys.py` names every key."""
