"""One graph pass per module; each registers itself with ``@register_pass``."""
