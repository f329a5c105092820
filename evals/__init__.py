"""Evals: feedback -> eval cases -> scores against the real pipeline -> reports (see evals/README.md)."""
