"""The head node's SSH to its compute nodes (paramiko): its own key, the host keys it trusts,
and running a command on one node or many.

Host keys are checked against SDC_DATA_DIR/ssh/known_hosts and never added silently: a node
is trusted on first contact only when the operator asks for it (``accept_new``), and a node
whose key changed is refused. Nothing here prints or logs key material."""
