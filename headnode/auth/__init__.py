"""Authentication of CloudAPI requests: HTTP Signatures made with an account's SSH keys."""
