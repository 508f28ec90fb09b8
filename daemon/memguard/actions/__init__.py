"""Actions: what memguard does before the kill, decided by the engine, carried out here."""
