"""Following the reconciler (Argo CD, Flux) after a push, until the commit runs healthy."""
