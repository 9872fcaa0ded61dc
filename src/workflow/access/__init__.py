"""Who may do what: grants scoped by role, area and program, and the policy protocol."""
