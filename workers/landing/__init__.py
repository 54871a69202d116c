"""Worker-only: turning approved requests into commits on the branch, pushed in batches or
merged through the forge's merge requests, and finding what a dead worker left behind."""
