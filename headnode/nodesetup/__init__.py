"""Setting up and upgrading a compute node's agent over SSH: the node-side steps the jobs of
workflows/node_setup.py run, each on a ``headnode.ssh.client.connect(...)`` Connection.

The node's layout is in layout.py (PREFIX is "/" on a real node). Every function raises
``NodeSetupError(code, message)`` (errors.py) or a ``headnode.ssh.errors.SshError``, and
returns a small JSON-able dict for the job record that never holds a secret; the install
functions' dicts all have ``"changed": bool``.

API (stable since 14:45 UTC):

- ``bundle.prepare(settings, version: str | None = None) -> AgentBundle`` (``.version``,
  ``.directory``, ``.wheels``, ``.python``, ``.to_dict()``); None builds a wheel of the
  checkout the head node runs from (the project's version; built once per source digest:
  a node with that version installed keeps it, so bump the version to roll out changes).
  ``bundle.store_wheel(settings, filename, data) -> version``;
  ``bundle.stored_versions(settings) -> list[str]``; ``wheels.MAX_BYTES``.
- ``layout.NodeLayout(prefix="/")``: the node's paths (``env_file``, ``unit_name``, ...).
- ``node.inspect(conn, layout, backend, pool="") -> NodeState`` (``.to_dict()``,
  ``NodeState.from_dict(d)``); ``node.check(state, backend, bundle=None)`` raises
  NodeSetupError("NodeNotReady", every missing thing with its package).
- ``nodeconfig.node_config(settings, server_uuid, layout, backend, pool="", nic_tags="",
  hostname="", extra=None) -> NodeConfig`` (holds secrets: never record it);
  ``credentials.credentials_for(settings, server_uuid) -> str``.
- ``install.upload(conn, layout, bundle)``, ``install.install(conn, layout, bundle)``,
  ``install.write_config(conn, layout, config)``, ``install.activate(conn, layout,
  version)``, ``install.restore(conn, layout, before: NodeState | dict)``,
  ``install.remove_release(conn, layout, version)``.
"""
