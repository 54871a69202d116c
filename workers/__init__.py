"""The Git side of releasegate: RQ jobs, GitOps repository work, pin editors, reporting."""
