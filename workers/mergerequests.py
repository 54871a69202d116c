"""Where the merge request jobs lived until 0.1: jobs queued under these names before an
upgrade still run. New jobs name `workers.jobs`; remove this module in the next release."""

from workers.jobs import close_change, open_change

__all__ = ["close_change", "open_change"]
