"""memguard: predicts and explains out-of-memory kills."""

__version__ = "0.1.0"
