"""The Engine: the one object an application holds to start, fire, read and audit instances."""
