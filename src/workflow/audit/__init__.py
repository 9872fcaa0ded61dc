"""The audit trail: canonical hashing, per-instance chains, digests and their verification."""
