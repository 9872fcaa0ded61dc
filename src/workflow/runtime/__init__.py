"""What happens while an instance runs: the compiled state machine (the only ``transitions``
import), evidence values, and the rules for text people type, files they name and output they see.
"""
