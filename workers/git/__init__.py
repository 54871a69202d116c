"""Git only, no Redis: the worker's checkout, the bot's bare mirror, signing and trailers."""
