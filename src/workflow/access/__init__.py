"""Who may do what: grants scoped by role, area and program, the policy protocol (``policy``),
and granting, revoking, authorizing and recording denials (``grants``)."""
