"""What the head node and the agents share, and nothing of either: the pieces both sides
run (task logging, SSH public keys). It imports no package of ours (pyproject.toml's
import-linter contracts), so the agent may use it without pulling in the head node."""
