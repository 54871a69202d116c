"""What an operator declares: process settings and the deploy policy."""
