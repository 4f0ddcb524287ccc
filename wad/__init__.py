"""wad: the WhatsApp daemon of the CRM."""

__version__ = "0.1.0"
