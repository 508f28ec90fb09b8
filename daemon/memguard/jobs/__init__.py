"""Jobs: process trees that registered with memguard, and what they want to hear."""
