"""Platform adapters: each translates its platform's events to `ChatEvent` and replies back."""
