"""newsletter: bilingual action-alert email, built from Jinja templates and sent to a list."""

__version__ = "0.1.0"
