"""Sandboxed, bounded Jinja2 rendering, and which inputs a template reads (private)."""
