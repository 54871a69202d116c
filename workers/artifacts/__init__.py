"""The stores an app's versions live in: OCI registries, Git tags, Helm chart repositories.

Asked before a request is filed (does the version exist, and which digest is it) and again
right before the commit (is it still that digest). Every answer is bounded in size and time.
"""
