"""ARPO cold-start SFT on upstream LLaMA-Factory."""

__version__ = "0.1.0"


def register() -> None:
    """Perform all of the plugin's registrations with LLaMA-Factory in this process; safe to call twice."""
    from .template import register_template

    register_template()
