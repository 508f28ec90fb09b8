"""Time-to-OOM prediction: pure functions of a domain's recent samples."""
