"""Tokens, prices and budgets: what a call counts and costs (private)."""
